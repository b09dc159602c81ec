//! login, logout, whoami, passwd and `token ...`.

use clap::{Args, Subcommand};
use strongbox_proto::v1::auth_client::AuthClient;
use strongbox_proto::v1::*;

use super::{fmt_ms, read_secret, status_err, write_opts, Conn};
use crate::client::{save_token, token_path};

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[arg(long, short, default_value = "admin")]
    pub username: String,
    /// Read the password from stdin instead of a prompt.
    #[arg(long)]
    pub password_stdin: bool,
    /// Token lifetime (0 = the cluster's default).
    #[arg(long, default_value_t = 0)]
    pub ttl_seconds: u64,
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Extend the saved token (up to its renew limit).
    Renew {
        #[arg(long, default_value_t = 0)]
        ttl_seconds: u64,
    },
    /// Revoke a token read from stdin (RFC 7009).
    Revoke,
    /// Describe a token read from stdin (RFC 7662; needs read on tokens).
    Introspect,
    /// Client-credentials grant: the client secret is read from stdin or a
    /// prompt; the token is printed on stdout (or saved with --save).
    Client {
        #[arg(long)]
        client_id: String,
        /// Roles the token may use (default: all of the client's).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long, default_value_t = 0)]
        ttl_seconds: u64,
        /// Save as the CLI's token instead of printing it.
        #[arg(long)]
        save: bool,
    },
}

pub async fn login(conn: Conn, a: LoginArgs) -> anyhow::Result<()> {
    let password = read_secret("Password", a.password_stdin)?;
    let mut c = AuthClient::new(conn.profile.connect().await?);
    let r = c
        .login(LoginRequest {
            username: a.username.clone(),
            password: password.to_string(),
            ttl_seconds: a.ttl_seconds,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    let path = save_token(&conn.profile_path, &r.access_token)?;
    println!(
        "logged in as {}; token saved to {} (expires {})",
        a.username,
        path.display(),
        fmt_ms(r.expires_ms)
    );
    Ok(())
}

pub async fn logout(conn: Conn) -> anyhow::Result<()> {
    let mut c = AuthClient::new(conn.channel().await?);
    c.logout(LogoutRequest { options: None }).await.map_err(status_err)?;
    let _ = std::fs::remove_file(token_path(&conn.profile_path));
    println!("logged out");
    Ok(())
}

pub async fn whoami(conn: Conn) -> anyhow::Result<()> {
    let mut c = AuthClient::new(conn.channel().await?);
    let r = c.who_am_i(WhoAmIRequest { options: None }).await.map_err(status_err)?.into_inner();
    println!("{}", r.principal);
    println!("roles: {}", if r.roles.is_empty() { "-".into() } else { r.roles.join(", ") });
    println!("token expires {}; its renewal window ends {}", fmt_ms(r.expires_ms), fmt_ms(r.renew_until_ms));
    Ok(())
}

pub async fn passwd(conn: Conn, password_stdin: bool) -> anyhow::Result<()> {
    let old = read_secret("Current password", password_stdin)?;
    let new = read_secret("New password", password_stdin)?;
    let mut c = AuthClient::new(conn.channel().await?);
    c.change_password(ChangePasswordRequest {
        options: write_opts(None),
        old_password: old.to_string(),
        new_password: new.to_string(),
    })
    .await
    .map_err(|s| {
        if s.message().starts_with("old_password") {
            anyhow::anyhow!("the current password is wrong; nothing changed ({:?})", s.code())
        } else {
            status_err(s)
        }
    })?;
    println!("password changed; your other sessions (tokens) were logged out, this one goes on");
    Ok(())
}

pub async fn token(conn: Conn, cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Renew { ttl_seconds } => {
            let mut c = AuthClient::new(conn.channel().await?);
            let r =
                c.renew(RenewRequest { options: None, ttl_seconds }).await.map_err(status_err)?.into_inner();
            println!("token now expires {}", fmt_ms(r.expires_ms));
        }
        TokenCmd::Revoke => {
            let t = read_secret("Token to revoke", false)?;
            let mut c = AuthClient::new(conn.channel().await?);
            c.revoke(RevokeRequest { options: None, token: t.to_string() }).await.map_err(status_err)?;
            println!("revoked");
        }
        TokenCmd::Introspect => {
            let t = read_secret("Token", false)?;
            let mut c = AuthClient::new(conn.channel().await?);
            let r = c
                .introspect(IntrospectRequest { options: None, token: t.to_string() })
                .await
                .map_err(status_err)?
                .into_inner();
            if r.active {
                println!("active: true\nsub: {}\nscope: {}\nexp: {}\niat: {}", r.sub, r.scope, r.exp, r.iat);
            } else {
                println!("active: false");
            }
        }
        TokenCmd::Client { client_id, scopes, ttl_seconds, save } => {
            let secret = read_secret("Client secret", false)?;
            let mut c = AuthClient::new(conn.profile.connect().await?);
            let r = c
                .client_token(ClientTokenRequest {
                    grant_type: "client_credentials".into(),
                    client_id,
                    client_secret: secret.to_string(),
                    scopes,
                    ttl_seconds,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            if save {
                let path = save_token(&conn.profile_path, &r.access_token)?;
                println!("token saved to {} (scopes: {})", path.display(), r.scopes.join(" "));
            } else {
                println!("{}", r.access_token);
            }
        }
    }
    Ok(())
}
