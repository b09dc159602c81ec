//! `strongbox user|role|client ...`.

use clap::Subcommand;
use strongbox_proto::v1::clients_client::ClientsClient;
use strongbox_proto::v1::roles_client::RolesClient;
use strongbox_proto::v1::users_client::UsersClient;
use strongbox_proto::v1::*;

use super::{fmt_ms, read_secret, status_err, write_opts, Conn};

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user (password from a prompt or stdin).
    Create {
        username: String,
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    Get {
        username: String,
    },
    List,
    Delete {
        username: String,
    },
    /// Disable a user: its tokens stop working for good.
    Disable {
        username: String,
    },
    Enable {
        username: String,
    },
    /// Reset a password (kills the user's tokens, clears a lockout).
    SetPassword {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Lift a lockout.
    Unlock {
        username: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoleCmd {
    /// Create or replace a role: --allow "read secrets:team-a/*" --deny "write users".
    Put {
        name: String,
        #[arg(long)]
        allow: Vec<String>,
        #[arg(long)]
        deny: Vec<String>,
    },
    Get {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
    /// Give a role to user:<name> or client:<id>.
    Assign {
        role: String,
        #[arg(long)]
        to: String,
    },
    Unassign {
        role: String,
        #[arg(long)]
        from: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Create a service client; its secret is printed once.
    Create {
        client_id: String,
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    Get {
        client_id: String,
    },
    List,
    Delete {
        client_id: String,
    },
    Disable {
        client_id: String,
    },
    Enable {
        client_id: String,
    },
    /// Replace the client's secret (printed once); its tokens stop working.
    RotateSecret {
        client_id: String,
    },
}

fn print_user(u: &User) {
    println!(
        "{:<24} {:<8} {:<7} failed={} roles={} created {}",
        u.username,
        if u.enabled { "enabled" } else { "disabled" },
        if u.locked { "LOCKED" } else { "-" },
        u.recent_failed_logins,
        u.roles.join(","),
        fmt_ms(u.created_ms)
    );
    if u.locked {
        println!("  locked until {}", fmt_ms(u.locked_until_ms));
    }
}

pub async fn user(conn: Conn, cmd: UserCmd) -> anyhow::Result<()> {
    let mut c = UsersClient::new(conn.channel().await?);
    let req = |username: String| UserRequest { options: write_opts(None), username };
    let done = match cmd {
        UserCmd::Create { username, roles, password_stdin } => {
            let password = read_secret("Password for the new user", password_stdin)?;
            c.create(CreateUserRequest {
                options: write_opts(None),
                username,
                password: password.to_string(),
                roles,
            })
            .await
        }
        UserCmd::Get { username } => {
            let u = c.get(GetUserRequest { options: None, username }).await.map_err(status_err)?.into_inner();
            print_user(&u);
            return Ok(());
        }
        UserCmd::List => {
            let mut page_token = String::new();
            loop {
                let r = c
                    .list(ListUsersRequest {
                        options: None,
                        page: Some(Page { page_size: 1000, page_token }),
                    })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                r.users.iter().for_each(print_user);
                if r.next_page_token.is_empty() {
                    return Ok(());
                }
                page_token = r.next_page_token;
            }
        }
        UserCmd::Delete { username } => c.delete(req(username)).await,
        UserCmd::Disable { username } => c.disable(req(username)).await,
        UserCmd::Enable { username } => c.enable(req(username)).await,
        UserCmd::SetPassword { username, password_stdin } => {
            let password = read_secret("New password", password_stdin)?;
            c.set_password(SetPasswordRequest {
                options: write_opts(None),
                username,
                password: password.to_string(),
            })
            .await
        }
        UserCmd::Unlock { username } => c.unlock(req(username)).await,
    };
    let r = done.map_err(status_err)?.into_inner();
    println!("ok, revision {}", r.revision);
    Ok(())
}

/// "read secrets:team-a/*" → Permission.
fn permission(effect: &str, spec: &str) -> anyhow::Result<Permission> {
    let (action, resource) = spec
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("permission {spec:?} must be \"<read|write|admin> <resource>\""))?;
    Ok(Permission { effect: effect.into(), action: action.into(), resource: resource.trim().into() })
}

fn print_role(r: &Role) {
    println!("{} (revision {})", r.name, r.updated_revision);
    for p in &r.permissions {
        println!("  {} {} {}", p.effect, p.action, p.resource);
    }
}

pub async fn role(conn: Conn, cmd: RoleCmd) -> anyhow::Result<()> {
    let mut c = RolesClient::new(conn.channel().await?);
    let done = match cmd {
        RoleCmd::Put { name, allow, deny } => {
            let mut permissions = Vec::new();
            for a in &allow {
                permissions.push(permission("allow", a)?);
            }
            for d in &deny {
                permissions.push(permission("deny", d)?);
            }
            c.put(PutRoleRequest { options: write_opts(None), name, permissions }).await
        }
        RoleCmd::Get { name } => {
            let r = c.get(GetRoleRequest { options: None, name }).await.map_err(status_err)?.into_inner();
            print_role(&r);
            return Ok(());
        }
        RoleCmd::List => {
            let r = c
                .list(ListRolesRequest {
                    options: None,
                    page: Some(Page { page_size: 1000, page_token: String::new() }),
                })
                .await
                .map_err(status_err)?
                .into_inner();
            r.roles.iter().for_each(print_role);
            return Ok(());
        }
        RoleCmd::Delete { name } => c.delete(DeleteRoleRequest { options: write_opts(None), name }).await,
        RoleCmd::Assign { role, to } => {
            c.assign(AssignRoleRequest { options: write_opts(None), principal: to, role }).await
        }
        RoleCmd::Unassign { role, from } => {
            c.unassign(AssignRoleRequest { options: write_opts(None), principal: from, role }).await
        }
    };
    let r = done.map_err(status_err)?.into_inner();
    println!("ok, revision {}", r.revision);
    Ok(())
}

pub async fn client(conn: Conn, cmd: ClientCmd) -> anyhow::Result<()> {
    let mut c = ClientsClient::new(conn.channel().await?);
    let req = |client_id: String| ClientRequest { options: write_opts(None), client_id };
    let done = match cmd {
        ClientCmd::Create { client_id, roles } => {
            let r = c
                .create(CreateClientRequest { options: write_opts(None), client_id, roles })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("client {} created; its secret (shown only now):", r.client_id);
            println!("{}", r.client_secret);
            return Ok(());
        }
        ClientCmd::Get { client_id } => {
            let r =
                c.get(GetClientRequest { options: None, client_id }).await.map_err(status_err)?.into_inner();
            println!(
                "{} {} roles={}",
                r.client_id,
                if r.enabled { "enabled" } else { "disabled" },
                r.roles.join(",")
            );
            return Ok(());
        }
        ClientCmd::List => {
            let r = c
                .list(ListClientsRequest {
                    options: None,
                    page: Some(Page { page_size: 1000, page_token: String::new() }),
                })
                .await
                .map_err(status_err)?
                .into_inner();
            for cl in r.clients {
                println!(
                    "{} {} roles={}",
                    cl.client_id,
                    if cl.enabled { "enabled" } else { "disabled" },
                    cl.roles.join(",")
                );
            }
            return Ok(());
        }
        ClientCmd::Delete { client_id } => c.delete(req(client_id)).await,
        ClientCmd::Disable { client_id } => c.disable(req(client_id)).await,
        ClientCmd::Enable { client_id } => c.enable(req(client_id)).await,
        ClientCmd::RotateSecret { client_id } => {
            let r = c.rotate_secret(req(client_id)).await.map_err(status_err)?.into_inner();
            println!("client {}: new secret (shown only now; the old one no longer works):", r.client_id);
            println!("{}", r.client_secret);
            return Ok(());
        }
    };
    let r = done.map_err(status_err)?.into_inner();
    println!("ok, revision {}", r.revision);
    Ok(())
}
