//! `strongbox certs`: a cluster CA and node certificates for real
//! deployments, as files `serve`'s `[tls]` section points at. Nothing here
//! talks to a cluster.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use zeroize::Zeroizing;

use crate::tls::{DevPki, Host};

/// A CA lives this long unless told otherwise (days).
const CA_DAYS_DEFAULT: u32 = 3650;
/// A node certificate lives this long unless told otherwise (days).
const NODE_DAYS_DEFAULT: u32 = 825;
/// Bounds on --days: at least a day, at most about 30 years.
const DAYS_MAX: u32 = 11_000;

#[derive(Subcommand, Debug)]
pub enum CertsCmd {
    /// A new cluster CA: <dir>/ca.pem (give it to every node and client) and
    /// <dir>/ca.key (mode 0600; keep it off the nodes). Never overwrites.
    CreateCa {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "strongbox cluster CA")]
        common_name: String,
        #[arg(long, default_value_t = CA_DAYS_DEFAULT)]
        days: u32,
    },
    /// A node certificate signed by the CA: <dir>/<name>.pem and
    /// <dir>/<name>.key (mode 0600), for the node's `[tls]` cert and key.
    /// It never outlives the CA.
    /// Valid for the peer name `strongbox-node`, localhost, and every
    /// --host given: list each address or DNS name clients and peers dial.
    /// Never overwrites.
    CreateNode {
        #[arg(long)]
        dir: PathBuf,
        /// File name and certificate common name, e.g. node1.
        #[arg(long)]
        name: String,
        /// An IP address or DNS name the node is reached at. Repeatable.
        #[arg(long = "host", required = true)]
        hosts: Vec<Host>,
        #[arg(long, default_value_t = NODE_DAYS_DEFAULT)]
        days: u32,
        /// The CA certificate (default: <dir>/ca.pem).
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// The CA private key (default: <dir>/ca.key).
        #[arg(long)]
        ca_key: Option<PathBuf>,
    },
}

pub fn certs(cmd: CertsCmd) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::CreateCa { dir, common_name, days } => {
            check_days(days)?;
            let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
            refuse_existing(&[&cert, &key])?;
            std::fs::create_dir_all(&dir)?;
            let pki = DevPki::generate(&common_name, Some(days))?;
            write_pair(&key, pki.ca_key_pem(), &cert, &pki.ca_cert_pem)?;
            println!("CA certificate: {} (every node's tls.ca_cert; clients' --ca)", cert.display());
            println!(
                "CA private key: {} (0600; it signs node certificates: keep it off the nodes)",
                key.display()
            );
            Ok(())
        }
        CertsCmd::CreateNode { dir, name, hosts, days, ca_cert, ca_key } => {
            check_days(days)?;
            anyhow::ensure!(
                !name.is_empty()
                    && name.len() <= 64
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                    && !name.starts_with('.'),
                "--name {name:?}: use 1..=64 letters, digits, '-', '_' or '.' (it names the files)"
            );
            let ca_cert = ca_cert.unwrap_or_else(|| dir.join("ca.pem"));
            let ca_key = ca_key.unwrap_or_else(|| dir.join("ca.key"));
            let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
            refuse_existing(&[&cert, &key])?;
            let hint =
                "create a CA with `strongbox certs create-ca --dir <dir>`, or pass --ca-cert and --ca-key";
            let pki = DevPki::load(
                &read(&ca_cert).map_err(|e| e.context(hint))?,
                Zeroizing::new(read(&ca_key).map_err(|e| e.context(hint))?),
            )?;
            let node = pki.node_cert_for(&name, &hosts, Some(days))?;
            std::fs::create_dir_all(&dir)?;
            write_pair(&key, &node.key_pem, &cert, &node.cert_pem)?;
            let names: Vec<String> = hosts
                .iter()
                .map(|h| match h {
                    Host::Ip(ip) => ip.to_string(),
                    Host::Dns(n) => n.clone(),
                })
                .collect();
            println!(
                "node certificate: {} (valid until {} UTC for strongbox-node, localhost, {})",
                cert.display(),
                node.not_after.date(),
                names.join(", ")
            );
            println!("node private key: {} (0600)", key.display());
            Ok(())
        }
    }
}

fn check_days(days: u32) -> anyhow::Result<()> {
    anyhow::ensure!((1..=DAYS_MAX).contains(&days), "--days must be 1..={DAYS_MAX}, got {days}");
    Ok(())
}

/// Certificates and keys are never replaced: a second CA would split the
/// cluster, and a lost key cannot be recovered.
fn refuse_existing(paths: &[&Path]) -> anyhow::Result<()> {
    for p in paths {
        anyhow::ensure!(
            !p.exists(),
            "{} exists already; nothing was written (remove it first to replace it)",
            p.display()
        );
    }
    Ok(())
}

/// The key (0600), then its certificate, each created new: an existing
/// file, or a symlink planted in its place, is refused rather than
/// followed or truncated, and a run that cannot finish takes its key back.
fn write_pair(key: &Path, key_pem: &str, cert: &Path, cert_pem: &str) -> anyhow::Result<()> {
    write_new(key, key_pem, 0o600)?;
    if let Err(e) = write_new(cert, cert_pem, 0o644) {
        let _ = std::fs::remove_file(key);
        return Err(e);
    }
    Ok(())
}

fn write_new(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} exists already; nothing was written (remove it first to replace it)",
                    path.display()
                )
            } else {
                anyhow::anyhow!("cannot create {}: {e}", path.display())
            }
        })?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}
