//! The first admin of a new cluster. The node that initializes the cluster
//! proposes `InitStateVersion` (the newest state version it applies) and
//! then one `Bootstrap` command; apply accepts each only before the first
//! admin exists, so restarts and races are harmless.

use std::path::{Path, PathBuf};
use std::time::Duration;

use strongbox_store::command::{Bootstrap, InitStateVersion, STATE_VERSION_SUPPORTED};
use strongbox_store::names::NameKey;
use strongbox_store::{Actor, Command, ErrorCode, Op};
use zeroize::Zeroizing;

use crate::auth::Auth;
use crate::observe::now_ms;
use crate::services::Api;

const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Where the password comes from, in order: the configured file, the
/// environment, or a random one, written to `GENERATED_PASSWORD_FILE` in
/// the data directory (owner-only) before it is used.
fn password(auth: &Auth) -> anyhow::Result<(Zeroizing<String>, bool)> {
    if let Some(path) = &auth.settings.bootstrap_password_file {
        // As with the master key file: a password others may read is
        // refused, not used (the first admin holds every right).
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("cannot read bootstrap_password_file {}: {e}", path.display()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "bootstrap_password_file {} has mode {mode:o}; it must be readable by its owner only (chmod 600)",
                path.display()
            );
        }
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read bootstrap_password_file {}: {e}", path.display())
            })?);
        let pw = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
        return Ok((pw, false));
    }
    if let Ok(pw) = std::env::var("STRONGBOX_BOOTSTRAP_PASSWORD") {
        return Ok((Zeroizing::new(pw), false));
    }
    let mut raw = Zeroizing::new([0u8; 18]);
    rand::fill(&mut raw[..]);
    use base64::Engine;
    Ok((Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..])), true))
}

/// Runs until the cluster has its first admin (made here or elsewhere).
pub async fn run(api: Api, data_dir: PathBuf) {
    loop {
        match attempt(&api, &data_dir).await {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(error = %e, "bootstrap not done yet; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}

/// A generated first-admin password, in the initializing node's data
/// directory: not on stdout, which a service manager or `strongbox dev`
/// keeps in log files.
pub const GENERATED_PASSWORD_FILE: &str = "first-admin-password";

/// Keeps a generated password where only the node's owner reads it. An
/// existing file is one an earlier attempt wrote: its password is used.
fn keep_generated(data_dir: &Path, pw: Zeroizing<String>) -> anyhow::Result<Zeroizing<String>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(GENERATED_PASSWORD_FILE);
    if path.exists() {
        let text = Zeroizing::new(std::fs::read_to_string(&path)?);
        return Ok(Zeroizing::new(text.trim_end().to_string()));
    }
    let tmp = data_dir.join(format!("{GENERATED_PASSWORD_FILE}.partial"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(format!("{}\n", &*pw).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(pw)
}

async fn attempt(api: &Api, data_dir: &Path) -> anyhow::Result<()> {
    // Catch up first: a restarted node must not think a bootstrapped
    // cluster is new just because it has not applied the log yet.
    api.node.read_barrier(true, 0, None, Duration::from_secs(5)).await?;
    if api.node.sm.bootstrapped()? {
        return Ok(());
    }
    if api.node.sm.state_version()? < STATE_VERSION_SUPPORTED {
        let op = Op::InitStateVersion(InitStateVersion { version: STATE_VERSION_SUPPORTED });
        let (_, resp) = api.node.write(node_command(api, op), Duration::from_secs(10)).await?;
        match resp.result {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::FailedPrecondition => return Ok(()), // bootstrapped meanwhile
            Err(e) => anyhow::bail!("setting the state version refused: {e}"),
        }
    }
    let (pw, generated) = match password(&api.auth) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("{e}; no admin was created");
            return Ok(());
        }
    };
    let pw = if generated { keep_generated(data_dir, pw)? } else { pw };
    if let Err(s) = crate::auth::password("bootstrap password", pw.to_string(), true) {
        tracing::error!("{}; no admin was created", s.message());
        return Ok(());
    }
    let username = api.auth.settings.bootstrap_admin_username.clone();
    let password_phc = api.auth.hasher.hash(pw.clone()).await?;
    let op =
        Op::Bootstrap(Bootstrap { username: username.clone(), password_phc, name_key: NameKey::generate() });
    let (_, resp) = api.node.write(node_command(api, op), Duration::from_secs(10)).await?;
    match resp.result {
        Ok(_) => {
            tracing::info!(user = %username, "created the first admin");
            if generated {
                let path = data_dir.join(GENERATED_PASSWORD_FILE);
                tracing::warn!(
                    user = %username,
                    password_file = %path.display(),
                    "the first admin's password was generated into this file (owner-only); log in, change it \
                     with `strongbox passwd`, then delete the file"
                );
            }
            Ok(())
        }
        Err(e) if e.code == ErrorCode::FailedPrecondition => Ok(()),
        Err(e) => anyhow::bail!("bootstrap refused: {e}"),
    }
}

fn node_command(api: &Api, op: Op) -> Command {
    Command {
        request_id: uuid::Uuid::new_v4().to_string(),
        time_ms: now_ms(),
        node: api.node.id,
        actor: Actor::Node,
        op,
    }
}
