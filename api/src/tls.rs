//! TLS material: loading PEM files into tonic configs, and a cluster CA
//! with node certificates: throwaway for `strongbox dev` and tests, kept in
//! files for `strongbox certs`.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use strongbox_raft::network::PEER_TLS_NAME;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use zeroize::Zeroizing;

use crate::config::TlsFiles;

pub struct LoadedTls {
    pub ca: Certificate,
    pub identity: Identity,
}

pub fn load(files: &TlsFiles) -> anyhow::Result<LoadedTls> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()));
    let (ca_pem, cert_pem, key_pem) =
        (read(&files.ca_cert)?, read(&files.cert)?, Zeroizing::new(read(&files.key)?));
    let not_after = check_node_cert(&ca_pem, &cert_pem, &key_pem)
        .map_err(|e| anyhow::anyhow!("node certificate {}: {e}", files.cert.display()))?;
    metrics::gauge!("strongbox_tls_cert_expiry_timestamp_seconds").set(not_after.unix_timestamp() as f64);
    let left = not_after - time::OffsetDateTime::now_utc();
    if left < time::Duration::days(30) {
        tracing::warn!(
            cert = %files.cert.display(),
            expires = %not_after,
            days_left = left.whole_days(),
            "the node certificate expires soon: make a new one (strongbox certs create-node) and restart"
        );
    }
    let ca = Certificate::from_pem(ca_pem);
    let identity = Identity::from_pem(cert_pem, key_pem.to_vec());
    Ok(LoadedTls { ca, identity })
}

/// What would otherwise surface only as "peer unreachable" on the other
/// nodes, said at start: the certificate has expired (or is not valid yet),
/// lacks the name peers verify, was not issued by the cluster CA, or is
/// not the key's. Returns the end of its validity.
pub fn check_node_cert(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> anyhow::Result<time::OffsetDateTime> {
    fn text<'a>(b: &'a [u8], what: &str) -> anyhow::Result<&'a str> {
        std::str::from_utf8(b).map_err(|_| anyhow::anyhow!("the {what} is not PEM text"))
    }
    let cert_der = pem_der(text(cert_pem, "certificate")?)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
        .map_err(|e| anyhow::anyhow!("cannot be parsed: {e}"))?;
    // The CA file may be a bundle (an old and a new CA while rotating).
    let mut ca_subjects = Vec::new();
    for block in pem_blocks(text(ca_pem, "CA certificate")?) {
        let der = base64_der(&block)?;
        let (_, ca) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow::anyhow!("the CA certificate cannot be parsed: {e}"))?;
        ca_subjects.push(ca.subject().to_string());
    }
    let validity = cert.validity();
    let not_before = time::OffsetDateTime::from_unix_timestamp(validity.not_before.timestamp())?;
    let not_after = time::OffsetDateTime::from_unix_timestamp(validity.not_after.timestamp())?;
    let now = time::OffsetDateTime::now_utc();
    anyhow::ensure!(now >= not_before, "not valid until {not_before} (is this machine's clock right?)");
    anyhow::ensure!(now <= not_after, "expired on {not_after}: make a new one (strongbox certs create-node)");
    anyhow::ensure!(
        ca_subjects.contains(&cert.issuer().to_string()),
        "issued by {}, not by the cluster CA ({}): peers would refuse it",
        cert.issuer(),
        ca_subjects.join("; ")
    );
    let names_peer = cert.subject_alternative_name().ok().flatten().is_some_and(|san| {
        san.value
            .general_names
            .iter()
            .any(|n| matches!(n, x509_parser::extensions::GeneralName::DNSName(d) if *d == PEER_TLS_NAME))
    });
    anyhow::ensure!(
        names_peer,
        "lacks the DNS name {PEER_TLS_NAME:?} that peers verify (strongbox certs create-node adds it)"
    );
    // Only a key rcgen reads (PKCS#8) is compared; TLS itself takes more
    // formats, and a mismatch there still fails at the handshake.
    match KeyPair::from_pem(text(key_pem, "key")?) {
        Ok(key) => {
            let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
            anyhow::ensure!(
                cert_der.windows(spki.len()).any(|w| w == spki.as_slice()),
                "its key file holds another certificate's key"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "the node key's format is not checked against its certificate here")
        }
    }
    Ok(not_after)
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

/// A cluster CA and the node certificates it signs: generated and thrown
/// away (`strongbox dev`, tests), or kept in PEM files (`strongbox certs`).
pub struct DevPki {
    pub ca_cert_pem: String,
    ca_key_pem: Zeroizing<String>,
    issuer: Issuer<'static, KeyPair>,
    /// When the CA expires (None: never, in practice; see `set_validity`).
    ca_not_after: Option<time::OffsetDateTime>,
}

pub struct NodeCert {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
    /// The end of its validity.
    pub not_after: time::OffsetDateTime,
}

/// Where a certificate is valid: IP addresses or DNS names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(std::net::IpAddr),
    Dns(String),
}

impl std::str::FromStr for Host {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Host> {
        if let Ok(ip) = s.parse() {
            return Ok(Host::Ip(ip));
        }
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        anyhow::ensure!(ok, "--host {s:?} is neither an IP address nor a DNS name");
        Ok(Host::Dns(s.to_ascii_lowercase()))
    }
}

/// Validity: from an hour ago (clocks drift) for `days`; None: rcgen's
/// default, which never expires in practice (throwaway dev material).
fn set_validity(params: &mut CertificateParams, days: Option<u32>) {
    if let Some(days) = days {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(i64::from(days));
    }
}

impl DevPki {
    pub fn new(common_name: &str) -> anyhow::Result<DevPki> {
        Self::generate(common_name, None)
    }

    /// A new self-signed CA, valid for `days` (None: see `set_validity`).
    pub fn generate(common_name: &str, days: Option<u32>) -> anyhow::Result<DevPki> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, days);
        let cert = params.self_signed(&key)?;
        let ca_cert_pem = cert.pem();
        let ca_key_pem = Zeroizing::new(key.serialize_pem());
        let ca_not_after = days.map(|_| params.not_after);
        Ok(DevPki { ca_cert_pem, ca_key_pem, issuer: Issuer::new(params, key), ca_not_after })
    }

    /// An existing CA from its certificate and private key (PEM): one
    /// `strongbox certs create-ca` wrote, or any other.
    pub fn load(ca_cert_pem: &str, ca_key_pem: Zeroizing<String>) -> anyhow::Result<DevPki> {
        let key = KeyPair::from_pem(&ca_key_pem)
            .map_err(|e| anyhow::anyhow!("the CA key is not a PEM private key rcgen can use: {e}"))?;
        // A key that is not the certificate's would sign certificates no
        // peer accepts; say so now rather than at the first TLS handshake.
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let der = pem_der(ca_cert_pem).map_err(|e| anyhow::anyhow!("the CA certificate: {e}"))?;
        anyhow::ensure!(
            der.windows(spki.len()).any(|w| w == spki.as_slice()),
            "the CA key does not belong to the CA certificate"
        );
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow::anyhow!("the CA certificate cannot be parsed: {e}"))?;
        let ca_not_after =
            time::OffsetDateTime::from_unix_timestamp(parsed.validity().not_after.timestamp())?;
        anyhow::ensure!(
            ca_not_after > time::OffsetDateTime::now_utc(),
            "the CA certificate expired on {ca_not_after}: create a new CA (and new node certificates)"
        );
        let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, key)
            .map_err(|e| anyhow::anyhow!("the CA certificate cannot be parsed: {e}"))?;
        Ok(DevPki {
            ca_cert_pem: ca_cert_pem.to_string(),
            ca_key_pem,
            issuer,
            ca_not_after: Some(ca_not_after),
        })
    }

    /// The CA's private key, PEM: whoever holds it can mint node
    /// certificates the cluster trusts.
    pub fn ca_key_pem(&self) -> &Zeroizing<String> {
        &self.ca_key_pem
    }

    /// A node certificate valid for the peer name, localhost and the given
    /// IP addresses, usable as both TLS server and client.
    pub fn node_cert(&self, node_name: &str, ips: &[std::net::IpAddr]) -> anyhow::Result<NodeCert> {
        let hosts: Vec<Host> = ips.iter().map(|ip| Host::Ip(*ip)).collect();
        self.node_cert_for(node_name, &hosts, None)
    }

    /// As `node_cert`, for any hosts, valid for `days` (None: see
    /// `set_validity`). Peers verify the name `strongbox-node`; clients
    /// verify the host they dialled, so every address or name clients
    /// and peers use must be listed.
    pub fn node_cert_for(
        &self,
        node_name: &str,
        hosts: &[Host],
        days: Option<u32>,
    ) -> anyhow::Result<NodeCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![PEER_TLS_NAME.to_string(), "localhost".to_string()])?;
        for host in hosts {
            params.subject_alt_names.push(match host {
                Host::Ip(ip) => SanType::IpAddress(*ip),
                Host::Dns(name) => SanType::DnsName(name.as_str().try_into()?),
            });
        }
        params.distinguished_name.push(DnType::CommonName, node_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params, days);
        // Not past the CA's own expiry: a chain is no longer valid then.
        if let Some(ca_not_after) = self.ca_not_after {
            params.not_after = params.not_after.min(ca_not_after);
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(NodeCert {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            not_after: params.not_after,
        })
    }
}

/// The DER bytes of the first PEM block in `pem`.
/// Every PEM block's base64 body, in order.
fn pem_blocks(pem: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        if line.starts_with("-----BEGIN") {
            current = Some(String::new());
        } else if line.starts_with("-----END") {
            blocks.extend(current.take());
        } else if let Some(body) = current.as_mut() {
            body.push_str(line);
        }
    }
    blocks
}

fn base64_der(body: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| anyhow::anyhow!("not PEM: {e}"))
}

fn pem_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| anyhow::anyhow!("not PEM: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_is_checked_against_its_ca_and_key_before_serving() {
        let pki = DevPki::new("test CA").unwrap();
        let ip = ["127.0.0.1".parse().unwrap()];
        let (one, two) = (pki.node_cert("n1", &ip).unwrap(), pki.node_cert("n2", &ip).unwrap());
        let ca = pki.ca_cert_pem.as_bytes();
        let not_after =
            check_node_cert(ca, one.cert_pem.as_bytes(), one.key_pem.as_bytes()).expect("a good pair");
        assert!(not_after > time::OffsetDateTime::now_utc());

        let rogue = DevPki::new("rogue CA").unwrap().node_cert("n1", &ip).unwrap();
        let e = check_node_cert(ca, rogue.cert_pem.as_bytes(), rogue.key_pem.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("not by the cluster CA"), "{e}");

        let e = check_node_cert(ca, one.cert_pem.as_bytes(), two.key_pem.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("another certificate's key"), "{e}");

        let e = check_node_cert(ca, b"not a certificate", one.key_pem.as_bytes()).unwrap_err();
        assert!(!e.to_string().is_empty());

        // A bundle holding the new CA and the old one: either issuer is fine.
        let bundle = format!("{}{}", DevPki::new("rogue CA").unwrap().ca_cert_pem, pki.ca_cert_pem);
        check_node_cert(bundle.as_bytes(), one.cert_pem.as_bytes(), one.key_pem.as_bytes())
            .expect("in the bundle");
    }
}
