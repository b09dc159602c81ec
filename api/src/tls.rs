//! TLS material: loading PEM files into tonic configs, and generating a
//! throwaway cluster CA with node certificates for `strongbox dev` and tests.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use strongbox_raft::network::PEER_TLS_NAME;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::TlsFiles;

pub struct LoadedTls {
    pub ca: Certificate,
    pub identity: Identity,
}

pub fn load(files: &TlsFiles) -> anyhow::Result<LoadedTls> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()));
    let ca = Certificate::from_pem(read(&files.ca_cert)?);
    let identity = Identity::from_pem(read(&files.cert)?, read(&files.key)?);
    Ok(LoadedTls { ca, identity })
}

impl LoadedTls {
    /// Client port: server authentication only (clients prove themselves
    /// with tokens, not certificates).
    pub fn api_server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity.clone())
    }

    /// Peer port: mutual TLS; only certificates signed by the cluster CA.
    pub fn peer_server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity.clone()).client_ca_root(self.ca.clone())
    }

    /// Dialling peers: present our node certificate, trust only the cluster CA.
    pub fn peer_client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(PEER_TLS_NAME)
    }
}

/// A generated CA and the PEMs it signed.
pub struct DevPki {
    pub ca_cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub struct NodeCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl DevPki {
    pub fn new(common_name: &str) -> anyhow::Result<DevPki> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        let ca_cert_pem = cert.pem();
        Ok(DevPki { ca_cert_pem, issuer: Issuer::new(params, key) })
    }

    /// A node certificate valid for the peer name, localhost and the given
    /// IP addresses, usable as both TLS server and client.
    pub fn node_cert(&self, node_name: &str, ips: &[std::net::IpAddr]) -> anyhow::Result<NodeCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![PEER_TLS_NAME.to_string(), "localhost".to_string()])?;
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.distinguished_name.push(DnType::CommonName, node_name);
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(NodeCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// Writes a file readable by its owner only (keys).
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // `mode` applies only when the file is created: tighten an old one too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}
