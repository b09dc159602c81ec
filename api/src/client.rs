//! The CLI's connection to a cluster: a client profile (endpoints + CA) that
//! `strongbox dev` writes and every other command reads by default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strongbox_proto::leader::LeaderRouted;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Attaches `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> anyhow::Result<Bearer> {
        let value = token
            .map(|t| format!("Bearer {t}").parse::<MetadataValue<Ascii>>())
            .transpose()
            .map_err(|_| anyhow::anyhow!("the token is not valid ASCII"))?;
        Ok(Bearer(value.map(|mut v| {
            v.set_sensitive(true);
            v
        })))
    }

    pub fn none() -> Bearer {
        Bearer(None)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel whose calls carry the bearer token.
pub type AuthChannel = InterceptedService<LeaderRouted, Bearer>;

/// The CLI's token file: next to the profile (`token`), mode 0600.
pub fn token_path(profile_path: &Path) -> PathBuf {
    profile_path.with_file_name("token")
}

/// `$STRONGBOX_TOKEN`, else the token file, else none.
pub fn load_token(profile_path: &Path) -> Option<String> {
    if let Ok(t) = std::env::var("STRONGBOX_TOKEN") {
        return Some(t);
    }
    std::fs::read_to_string(token_path(profile_path)).ok().map(|t| t.trim().to_string())
}

pub fn save_token(profile_path: &Path, token: &str) -> anyhow::Result<PathBuf> {
    let path = token_path(profile_path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::tls::write_private(&path, token)?;
    Ok(path)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    /// Client addresses (host:port) of the nodes; the first that answers is used.
    pub endpoints: Vec<String>,
    /// CA certificate that signed the nodes' certificates.
    pub ca_cert: Option<PathBuf>,
    #[serde(default)]
    pub insecure: bool,
}

/// `$STRONGBOX_PROFILE`, else `~/.config/strongbox/profile.toml`.
pub fn default_profile_path() -> PathBuf {
    if let Some(p) = std::env::var_os("STRONGBOX_PROFILE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("strongbox").join("profile.toml")
}

impl Profile {
    pub fn load(path: &Path) -> anyhow::Result<Profile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "no client profile at {} ({e}); start a cluster with `strongbox dev` or pass --endpoint and --ca",
                path.display()
            )
        })?;
        Ok(toml::from_str(&text)?)
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, toml::to_string_pretty(self)?)?;
        Ok(())
    }

    fn endpoint(&self, addr: &str) -> anyhow::Result<Endpoint> {
        let scheme = if self.insecure { "http" } else { "https" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        if !self.insecure {
            let ca_path =
                self.ca_cert.as_ref().ok_or_else(|| anyhow::anyhow!(
                    "no CA certificate to verify the nodes with: the profile names no ca_cert; with --endpoint, \
                     pass --ca FILE (or --insecure for a node started with insecure = true)"
                ))?;
            let ca = std::fs::read(ca_path)
                .map_err(|e| anyhow::anyhow!("cannot read CA {}: {e}", ca_path.display()))?;
            ep = ep.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?;
        }
        Ok(ep)
    }

    /// A channel over every endpoint, starting at the first that answers
    /// and moving to the leader as the nodes' hints name it (see
    /// `strongbox_proto::leader`).
    pub async fn connect(&self) -> anyhow::Result<LeaderRouted> {
        let mut last_err = None;
        for (i, addr) in self.endpoints.iter().enumerate() {
            match self.endpoint(addr)?.connect().await {
                Ok(first) => {
                    let mut routes = Vec::with_capacity(self.endpoints.len());
                    for (j, other) in self.endpoints.iter().enumerate() {
                        let ch = if j == i { first.clone() } else { self.endpoint(other)?.connect_lazy() };
                        routes.push((other.clone(), ch));
                    }
                    return Ok(LeaderRouted::new(routes, i));
                }
                Err(e) => last_err = Some(format!("{addr}: {}", error_chain(&e))),
            }
        }
        anyhow::bail!("no endpoint answered ({})", last_err.unwrap_or_else(|| "no endpoints".into()))
    }

    /// A channel to one specific endpoint only, connected lazily.
    pub fn channel_to(&self, addr: &str) -> anyhow::Result<LeaderRouted> {
        Ok(LeaderRouted::new(vec![(addr.to_string(), self.endpoint(addr)?.connect_lazy())], 0))
    }
}

/// An error with its causes: tonic's transport error alone reads only
/// "transport error", whether the certificate was refused, its name did
/// not match, or nothing listened.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
