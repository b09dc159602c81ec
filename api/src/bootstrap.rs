//! The first admin of a new cluster. The node that initializes the cluster
//! proposes `InitStateVersion` (the newest state version it applies) and
//! then one `Bootstrap` command; apply accepts each only before the first
//! admin exists, so restarts and races are harmless.

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
/// environment, or a random one that is printed once on success.
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
pub async fn run(api: Api) {
    loop {
        match attempt(&api).await {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(error = %e, "bootstrap not done yet; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}

async fn attempt(api: &Api) -> anyhow::Result<()> {
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
                // Shown once, on stdout (never in the log): like Vault's root token.
                println!("\nfirst admin: user {username:?}, password {}\n(shown only once; change it with `strongbox passwd`)\n", &*pw);
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
