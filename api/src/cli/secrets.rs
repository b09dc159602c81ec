//! `strongbox secret ...`.

use std::io::Read;

use clap::Subcommand;
use strongbox_proto::v1::secrets_client::SecretsClient;
use strongbox_proto::v1::*;

use super::{fmt_ms, read_opts, status_err, write_opts, Conn};

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Write a new version; the value is read from stdin (or --value).
    Put {
        path: String,
        /// The value (visible in `ps`: prefer stdin for real secrets).
        #[arg(long)]
        value: Option<String>,
        /// Check-and-set on the current version (0 = must not exist).
        #[arg(long)]
        cas: Option<u64>,
        /// Versions to keep (1..100).
        #[arg(long)]
        max_versions: Option<u64>,
        /// Idempotency key: retrying with the same id applies at most once.
        #[arg(long)]
        request_id: Option<String>,
    },
    Get {
        path: String,
        #[arg(long, default_value_t = 0)]
        version: u64,
        /// Serve from the contacted node without a leader round (may be stale).
        #[arg(long)]
        local: bool,
        #[arg(long, default_value_t = 0)]
        min_revision: u64,
    },
    /// Soft delete the latest version, or the versions named (they stay
    /// deleted until undeleted; other versions stay readable).
    Delete {
        path: String,
        /// A version to delete (repeat for more); none: the latest.
        #[arg(long = "version")]
        versions: Vec<u64>,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Bring back the soft-deleted latest version, or the versions named.
    Undelete {
        path: String,
        /// A version to bring back (repeat for more); none: the latest.
        #[arg(long = "version")]
        versions: Vec<u64>,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Write an older version's value as a new version (Vault's `kv
    /// rollback`): read it, then put it with check-and-set on the latest
    /// version read with it, so a write in between fails the rollback
    /// instead of being overwritten.
    /// (No --request-id: a retry reads the new latest version and so sends
    /// another cas; a failed rollback is simply run again.)
    Rollback {
        path: String,
        /// The version whose value comes back (deleted or destroyed ones
        /// cannot).
        #[arg(long)]
        version: u64,
    },
    /// Permanently remove the values of some versions.
    Destroy {
        path: String,
        #[arg(long = "version", required = true)]
        versions: Vec<u64>,
    },
    /// Remove a secret outright: every version, its metadata and its
    /// listing (Vault's `kv metadata delete`). Needs admin on the secret.
    #[command(alias = "metadata-delete")]
    Purge { path: String },
    /// Change a secret's settings without writing a version (Vault's `kv
    /// metadata put`).
    MetaPut {
        path: String,
        /// Versions to keep (1..=100), applied at the next put.
        #[arg(long)]
        max_versions: Option<u64>,
        /// Whether every put must send --cas.
        #[arg(long)]
        cas_required: Option<bool>,
        /// KEY=VALUE (repeat for more): replaces the custom metadata whole.
        #[arg(long = "custom", value_parser = parse_custom)]
        custom: Vec<(String, String)>,
        /// Remove all custom metadata.
        #[arg(long, conflicts_with = "custom")]
        clear_custom: bool,
    },
    /// Secrets and folders directly under a folder.
    List {
        #[arg(default_value = "")]
        folder: String,
    },
    /// Versions, times and who changed it last.
    Meta { path: String },
}

pub async fn secret(conn: Conn, cmd: SecretCmd) -> anyhow::Result<()> {
    let mut client = SecretsClient::new(conn.channel().await?);
    match cmd {
        SecretCmd::Put { path, value, cas, max_versions, request_id } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => {
                    let mut buf = Vec::new();
                    std::io::stdin().read_to_end(&mut buf)?;
                    buf
                }
            };
            let r = client
                .put(PutSecretRequest { options: write_opts(request_id), path, value, cas, max_versions })
                .await
                .map_err(status_err)?
                .into_inner();
            println!(
                "version {} revision {}{}",
                r.version,
                r.revision,
                if r.deduplicated { " (deduplicated)" } else { "" }
            );
        }
        SecretCmd::Get { path, version, local, min_revision } => {
            let r = client
                .get(GetSecretRequest { options: read_opts(local, min_revision), path, version })
                .await
                .map_err(status_err)?
                .into_inner();
            // The value's exact bytes (binary included); a newline only
            // for a terminal, so the prompt does not run on.
            use std::io::{IsTerminal, Write};
            let mut out = std::io::stdout().lock();
            out.write_all(&r.value)?;
            if out.is_terminal() && !r.value.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
            out.flush()?;
            eprintln!("(version {} of {}, revision {})", r.version, r.latest_version, r.revision);
        }
        SecretCmd::Rollback { path, version } => {
            if version == 0 {
                anyhow::bail!("--version: name the version to roll back to (1 or more)");
            }
            let old = client
                .get(GetSecretRequest { options: read_opts(false, 0), path: path.clone(), version })
                .await
                .map_err(status_err)?
                .into_inner();
            let r = client
                .put(PutSecretRequest {
                    options: write_opts(None),
                    path,
                    value: old.value,
                    cas: Some(old.latest_version),
                    max_versions: None,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            println!(
                "version {} revision {}: the value of version {version}{}",
                r.version,
                r.revision,
                if r.deduplicated { " (deduplicated)" } else { "" }
            );
        }
        SecretCmd::Delete { path, versions, request_id } => {
            if versions.is_empty() {
                let r = client
                    .delete(DeleteSecretRequest { options: write_opts(request_id), path })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                if r.version == 0 {
                    println!("no version to delete yet (metadata only), revision {}", r.revision);
                } else {
                    println!("deleted version {} revision {}", r.version, r.revision);
                }
            } else {
                let r = client
                    .delete_versions(SecretVersionsRequest {
                        options: write_opts(request_id),
                        path,
                        versions,
                    })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                println!("deleted versions [{}] revision {}", list(&r.versions), r.revision);
            }
        }
        SecretCmd::Undelete { path, versions, request_id } => {
            if versions.is_empty() {
                let r = client
                    .undelete(UndeleteSecretRequest { options: write_opts(request_id), path })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                if r.version == 0 {
                    println!("no version to undelete yet (metadata only), revision {}", r.revision);
                } else {
                    println!("version {} readable again, revision {}", r.version, r.revision);
                }
            } else {
                let r = client
                    .undelete_versions(SecretVersionsRequest {
                        options: write_opts(request_id),
                        path,
                        versions,
                    })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                println!("versions [{}] readable again, revision {}", list(&r.versions), r.revision);
            }
        }
        SecretCmd::Destroy { path, versions } => {
            let r = client
                .destroy(DestroySecretRequest { options: write_opts(None), path, versions })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("destroyed {} version(s), revision {}", r.destroyed, r.revision);
        }
        SecretCmd::Purge { path } => {
            let r = client
                .purge(PurgeSecretRequest { options: write_opts(None), path: path.clone() })
                .await
                .map_err(status_err)?
                .into_inner();
            println!(
                "purged {path}: {} version(s) destroyed; no metadata or listing left, revision {}",
                r.versions_destroyed, r.revision
            );
        }
        SecretCmd::MetaPut { path, max_versions, cas_required, custom, clear_custom } => {
            let custom_metadata = (clear_custom || !custom.is_empty())
                .then(|| CustomMetadata { entries: custom.into_iter().collect() });
            let r = client
                .update_metadata(UpdateSecretMetadataRequest {
                    options: write_opts(None),
                    path,
                    max_versions,
                    cas_required,
                    custom_metadata,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("revision {}", r.revision);
        }
        SecretCmd::List { folder } => {
            let mut page_token = String::new();
            loop {
                let r = client
                    .list(ListSecretsRequest {
                        options: None,
                        folder: folder.clone(),
                        page: Some(Page { page_size: 1000, page_token }),
                    })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                for e in &r.entries {
                    println!("{}", e.name);
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
        }
        SecretCmd::Meta { path } => {
            let m = client
                .metadata(SecretMetadataRequest { options: None, path })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("path: {}", m.path);
            if m.latest_version == 0 {
                println!("versions: none yet (keeps {})", m.max_versions);
            } else {
                println!(
                    "versions: {}..={} (keeps {}){}",
                    m.oldest_version,
                    m.latest_version,
                    m.max_versions,
                    if m.deleted { ", latest deleted" } else { "" }
                );
            }
            println!("created: revision {}, {}", m.created_revision, fmt_ms(m.created_ms));
            if m.cas_required {
                println!("cas required: every put must send --cas");
            }
            let mut custom: Vec<_> = m.custom_metadata.iter().collect();
            custom.sort();
            for (k, v) in custom {
                println!("custom: {k}={v}");
            }
            println!(
                "updated: revision {}, {} by {}",
                m.updated_revision,
                fmt_ms(m.updated_ms),
                m.updated_by
            );
            for v in &m.versions {
                let state = if v.destroyed {
                    "destroyed".to_string()
                } else if v.deleted_ms != 0 {
                    format!("deleted {}", fmt_ms(v.deleted_ms))
                } else {
                    "live".to_string()
                };
                let created =
                    if v.destroyed { String::new() } else { format!(", created {}", fmt_ms(v.created_ms)) };
                println!("  version {}: {state}{created}", v.version);
            }
        }
    }
    Ok(())
}

fn list(versions: &[u64]) -> String {
    versions.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

fn parse_custom(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    Ok((k.to_string(), v.to_string()))
}
