//! The CLI's connection to a cluster: a client profile (endpoints + CA) that
//! `strongbox dev` writes and every other command reads by default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

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
                self.ca_cert.as_ref().ok_or_else(|| anyhow::anyhow!("the profile names no ca_cert"))?;
            let ca = std::fs::read(ca_path)
                .map_err(|e| anyhow::anyhow!("cannot read CA {}: {e}", ca_path.display()))?;
            ep = ep.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?;
        }
        Ok(ep)
    }

    /// Connects to the first endpoint that answers.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let mut last_err = None;
        for addr in &self.endpoints {
            match self.endpoint(addr)?.connect().await {
                Ok(c) => return Ok(c),
                Err(e) => last_err = Some(format!("{addr}: {e}")),
            }
        }
        anyhow::bail!("no endpoint answered ({})", last_err.unwrap_or_else(|| "no endpoints".into()))
    }

    /// A channel to one specific endpoint, connected lazily.
    pub fn channel_to(&self, addr: &str) -> anyhow::Result<Channel> {
        Ok(self.endpoint(addr)?.connect_lazy())
    }
}
