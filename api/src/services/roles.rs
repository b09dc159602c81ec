//! Roles and their assignment to users and clients.

use strongbox_proto::v1::roles_server::Roles;
use strongbox_proto::v1::*;
use strongbox_store::auth::{normalize_resource, validate_name, Action, Effect, Principal, RoleRecord, Rule};
use strongbox_store::command::{AssignRole, DeleteRole, PutRole};
use strongbox_store::Op;
use tonic::{Request, Response, Status};

use super::users::written;
use super::{internal, next_token, page, token_of, Api};
use crate::auth::permissions::Need;
use crate::auth::Rpc;
use crate::observe::check_size;

pub struct RolesService {
    api: Api,
}

impl RolesService {
    pub fn new(api: Api) -> Self {
        RolesService { api }
    }

    async fn assign_op(
        &self,
        req: Request<AssignRoleRequest>,
        rpc_: Rpc,
        assign: bool,
    ) -> Result<WriteResponse, Status> {
        check_size(req.get_ref())?;
        let (meta, _, r) = req.into_parts();
        let principal = Principal::parse(&r.principal)
            .and_then(|p| p.validate().map(|()| p))
            .map_err(|e| Status::invalid_argument(format!("principal: {}", e.message)))?;
        role_arg("role", &r.role)?;
        let op = Op::AssignRole(AssignRole { principal, role: r.role, assign });
        Ok(written(self.api.write(&meta, rpc_, "", r.options.as_ref(), op).await?))
    }
}

fn role_arg(field: &str, name: &str) -> Result<(), Status> {
    validate_name("role", name).map_err(|e| Status::invalid_argument(format!("{field}: {}", e.message)))
}

/// The kinds of resource the permission table names (`users`, `secrets`...),
/// each with whether it has sub-resources (`secrets:<path>`).
fn resource_kinds() -> Vec<(&'static str, bool)> {
    let mut kinds: Vec<(&'static str, bool)> = Rpc::ALL
        .iter()
        .filter_map(|rpc| match rpc.need() {
            Need::Access(_, template) => Some(match template.split_once(':') {
                Some((kind, _)) => (kind, true),
                None => (template, false),
            }),
            _ => None,
        })
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

/// A rule whose resource no RPC ever needs would grant or deny nothing, and
/// a typo (`secret:team-a/*`) would go unnoticed: refused here.
fn check_resource_kind(resource: &str) -> Result<(), String> {
    let kinds = resource_kinds();
    let (kind, sub) = match resource.split_once(':') {
        Some((k, rest)) => (k, Some(rest)),
        None => (resource, None),
    };
    if let (Some(prefix), None) = (kind.strip_suffix('*'), sub) {
        if kinds.iter().any(|(k, _)| k.starts_with(prefix)) {
            return Ok(());
        }
    }
    let Some((_, scoped)) = kinds.iter().find(|(k, _)| *k == kind) else {
        let names: Vec<String> = kinds
            .iter()
            .map(|(k, scoped)| if *scoped { format!("{k}:...") } else { k.to_string() })
            .collect();
        return Err(format!(
            "resource {resource:?}: unknown kind {kind:?}; use one of {} ('*' at the end matches more)",
            names.join(", ")
        ));
    };
    if sub.is_some() && !scoped {
        return Err(format!("resource {resource:?}: {kind} has no sub-resources; use {kind:?}"));
    }
    match (scoped, sub) {
        (true, None) => Err(format!(
            "resource {resource:?}: every request on {kind} names one ({kind}:<...>), so this matches none; \
             use {kind}:* for all of them"
        )),
        (true, Some(sub)) => {
            check_sub_resource(kind, sub).map_err(|why| format!("resource {resource:?}: {why}"))
        }
        (false, _) => Ok(()),
    }
}

/// A sub-resource no request can name (a ledger id that is not one, a path
/// with an empty, '.' or '..' segment) would match nothing; a deny rule
/// written that way would silently deny nothing.
fn check_sub_resource(kind: &str, sub: &str) -> Result<(), String> {
    let (fixed, pattern) = match sub.strip_suffix('*') {
        Some(prefix) => (prefix, true),
        None => (sub, false),
    };
    match kind {
        "ledgers" => {
            let named = if pattern {
                fixed.bytes().all(|b| b.is_ascii_digit()) && !fixed.starts_with('0')
            } else {
                fixed.parse::<u32>().is_ok_and(|l| l != 0 && l.to_string() == fixed)
            };
            if named {
                Ok(())
            } else {
                Err("a ledger is named by its id, 1 to 4294967295 without leading zeros (ledgers:7), \
                     or a prefix of one (ledgers:7*), or ledgers:* for every ledger"
                    .into())
            }
        }
        "secrets" => {
            if !pattern && fixed.is_empty() {
                return Err(
                    "names no path; use secrets:<path>, secrets:<folder>/* or secrets:* for every secret"
                        .into(),
                );
            }
            // Every segment but a pattern's last (partial) one, and a
            // folder's trailing '/' (`secrets:team-a/` is listing team-a).
            let mut segments: Vec<&str> = fixed.split('/').collect();
            if pattern || fixed.ends_with('/') {
                segments.pop();
            }
            match segments.iter().find(|s| s.is_empty() || **s == "." || **s == "..") {
                Some(s) => Err(format!(
                    "a secret path has no {} segment, so this matches none",
                    if s.is_empty() { "empty" } else { s }
                )),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_resource_kind;

    #[test]
    fn rules_that_could_match_nothing_are_refused() {
        for ok in [
            "*",
            "secrets*",
            "secrets:*",
            "secrets:team-a/*",
            "secrets:team-a/db/password",
            "secrets:team-a/",
            "secrets:team-*",
            "ledgers:*",
            "ledgers:7",
            "ledgers:4294967295",
            "ledgers:1*",
            "users",
            "users*",
        ] {
            assert_eq!(check_resource_kind(ok), Ok(()), "{ok}");
        }
        for bad in [
            "secrets",
            "secrets:",
            "secrets:../x",
            "secrets:a/../*",
            "secrets:a//b",
            "secrets:./*",
            "ledgers",
            "ledgers:",
            "ledgers:abc",
            "ledgers:-1",
            "ledgers:0",
            "ledgers:007",
            "ledgers:4294967296",
            "ledgers:0*",
            "ledgers:x*",
            "users:alice",
            "secret:team-a/*",
        ] {
            assert!(check_resource_kind(bad).is_err(), "{bad}");
        }
    }
}

fn rule_from(i: usize, p: Permission) -> Result<Rule, Status> {
    let bad = |m: String| Status::invalid_argument(format!("permissions[{i}]: {m}"));
    // Required: a client that drops the field must not turn a deny into
    // an allow (proto3 sends an empty string for a missing one).
    let effect = match p.effect.as_str() {
        "allow" => Effect::Allow,
        "deny" => Effect::Deny,
        "" => return Err(bad("effect is required: allow or deny".into())),
        other => return Err(bad(format!("effect must be allow or deny, got {other:?}"))),
    };
    let action = Action::parse(&p.action).map_err(|e| bad(e.message))?;
    let rule = Rule { effect, action, resource: normalize_resource(&p.resource) };
    rule.validate().map_err(|e| bad(e.message))?;
    check_resource_kind(&rule.resource).map_err(bad)?;
    Ok(rule)
}

fn role_view(name: String, r: RoleRecord) -> Role {
    Role {
        name,
        permissions: r
            .rules
            .into_iter()
            .map(|rule| Permission {
                effect: match rule.effect {
                    Effect::Allow => "allow".into(),
                    Effect::Deny => "deny".into(),
                },
                action: rule.action.as_str().into(),
                resource: rule.resource,
            })
            .collect(),
        created_revision: r.created_revision,
        updated_revision: r.updated_revision,
        updated_ms: r.updated_ms,
    }
}

#[tonic::async_trait]
impl Roles for RolesService {
    async fn put(&self, req: Request<PutRoleRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("roles.put", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                role_arg("name", &r.name)?;
                let rules = r
                    .permissions
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| rule_from(i, p))
                    .collect::<Result<Vec<_>, _>>()?;
                strongbox_store::auth::validate_rules(&rules)
                    .map_err(|e| crate::observe::field_status("permissions", e))?;
                let op = Op::PutRole(PutRole { name: r.name, rules });
                Ok(written(self.api.write(&meta, Rpc::RolesPut, "", r.options.as_ref(), op).await?))
            })
            .await
    }

    async fn get(&self, req: Request<GetRoleRequest>) -> Result<Response<Role>, Status> {
        self.api
            .rpc("roles.get", token_of(req.metadata()), async {
                let (meta, _, r) = req.into_parts();
                role_arg("name", &r.name)?;
                self.api.read(&meta, Rpc::RolesGet, "", r.options.as_ref()).await?;
                match self.api.node.sm.role(&r.name).map_err(internal)? {
                    Some(role) => Ok(role_view(r.name, role)),
                    None => Err(Status::not_found(format!("no role {:?}", r.name))),
                }
            })
            .await
    }

    async fn list(&self, req: Request<ListRolesRequest>) -> Result<Response<ListRolesResponse>, Status> {
        self.api
            .rpc("roles.list", token_of(req.metadata()), async {
                let (meta, _, r) = req.into_parts();
                let (size, after) = page(r.page.as_ref())?;
                self.api.read(&meta, Rpc::RolesList, "", r.options.as_ref()).await?;
                let revision = self.api.revision()?;
                let rows = self.api.node.sm.list_roles(&after, size).map_err(internal)?;
                let next_page_token = next_token(&rows, size, |(n, _)| n.clone());
                Ok(ListRolesResponse {
                    roles: rows.into_iter().map(|(n, r)| role_view(n, r)).collect(),
                    next_page_token,
                    revision,
                })
            })
            .await
    }

    async fn delete(&self, req: Request<DeleteRoleRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("roles.delete", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                role_arg("name", &r.name)?;
                let op = Op::DeleteRole(DeleteRole { name: r.name });
                Ok(written(self.api.write(&meta, Rpc::RolesDelete, "", r.options.as_ref(), op).await?))
            })
            .await
    }

    async fn assign(&self, req: Request<AssignRoleRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("roles.assign", token_of(req.metadata()), async {
                self.assign_op(req, Rpc::RolesAssign, true).await
            })
            .await
    }

    async fn unassign(&self, req: Request<AssignRoleRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("roles.unassign", token_of(req.metadata()), async {
                self.assign_op(req, Rpc::RolesUnassign, false).await
            })
            .await
    }
}
