//! Who may do what: principals, roles, tokens, and the one authorisation
//! check used both inside apply (writes) and on the serving node (reads).
//!
//! Deny by default; an explicit deny wins over any allow. A token is valid
//! while its record exists, it has not expired, and its principal still
//! exists, is enabled, and has the epoch the token was issued under (so
//! disabling or deleting a principal kills its tokens, and re-enabling or
//! re-creating it does not revive them).

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::command::{set_state_version, CommandError, ErrorCode};
use crate::layout::Cf;
use crate::limits::{NAME_BYTES_MAX, ROLE_RULES_MAX};
use crate::names::NameKey;
use crate::DbError;

/// Reads of the state, inside apply (through the batch overlay) or outside.
pub trait Read {
    fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>, DbError>;
    /// The key that hashes names into RocksDB keys, as of this state.
    fn names(&self) -> Result<NameKey, DbError>;
    /// The RocksDB key of a name in `cf` (see `names`).
    fn name_key(&self, cf: Cf, name: &str) -> Result<[u8; 32], DbError> {
        Ok(self.names()?.key(cf, name))
    }
    /// Whether a deny rule also withholds `admin` (which includes what it
    /// denies): apply follows the state version (`DENY_COVERS_ADMIN`);
    /// reads outside apply take the newest rule, the stricter one.
    fn deny_covers_admin(&self) -> bool {
        true
    }
    /// Which state version's wording a token's refusal takes: apply follows
    /// the state version (`PRECISE_TOKEN_REFUSALS`,
    /// `UNKNOWN_TOKENS_MAY_HAVE_EXPIRED`), since the refusal's text is kept
    /// in the request record; reads outside apply take the newest wording.
    fn refusal_wording(&self) -> u32 {
        crate::command::STATE_VERSION_SUPPORTED
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Principal {
    User(String),
    Client(String),
}

impl Principal {
    /// `user:alice` / `client:ci`.
    pub fn parse(s: &str) -> Result<Principal, CommandError> {
        match s.split_once(':') {
            Some(("user", n)) => Ok(Principal::User(n.to_string())),
            Some(("client", n)) => Ok(Principal::Client(n.to_string())),
            _ => Err(CommandError::invalid(format!("principal {s:?} must be user:<name> or client:<id>"))),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Principal::User(n) | Principal::Client(n) => n,
        }
    }

    pub fn validate(&self) -> Result<(), CommandError> {
        validate_name(self.kind(), self.name())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Principal::User(_) => "user",
            Principal::Client(_) => "client",
        }
    }

    pub fn cf(&self) -> Cf {
        match self {
            Principal::User(_) => Cf::Users,
            Principal::Client(_) => Cf::Clients,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.name())
    }
}

/// Usernames, client ids and role names: 1..=128 bytes of `[A-Za-z0-9._@-]`.
pub fn validate_name(what: &str, name: &str) -> Result<(), CommandError> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(CommandError::invalid(format!(
            "{what} name must be 1..={NAME_BYTES_MAX} bytes, got {}",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "._@-".contains(*c))) {
        return Err(CommandError::invalid(format!(
            "{what} name {name:?} contains {c:?}: use letters, digits, '.', '_', '@' or '-'"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    Read,
    Write,
    /// Covers read and write on the same resource, plus administration.
    Admin,
}

impl Action {
    pub fn parse(s: &str) -> Result<Action, CommandError> {
        match s {
            "read" => Ok(Action::Read),
            "write" => Ok(Action::Write),
            "admin" => Ok(Action::Admin),
            _ => Err(CommandError::invalid(format!("action {s:?} must be read, write or admin"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Admin => "admin",
        }
    }

    fn covers(self, wanted: Action) -> bool {
        self == wanted || self == Action::Admin
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// One permission of a role: `allow read secrets:team-a/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub effect: Effect,
    pub action: Action,
    /// A resource (`users`, `secrets:team-a/db/password`, `ledger:7`), or a
    /// prefix pattern ending in `*` (`secrets:team-a/*`, `*`).
    pub resource: String,
}

impl Rule {
    pub fn validate(&self) -> Result<(), CommandError> {
        let r = &self.resource;
        if r.is_empty() || r.len() > crate::limits::SECRET_PATH_BYTES_MAX + 16 {
            return Err(CommandError::invalid(format!("resource pattern {r:?} is empty or too long")));
        }
        if r.strip_suffix('*').unwrap_or(r).contains('*') {
            return Err(CommandError::invalid(format!(
                "resource pattern {r:?}: '*' is only allowed at the end"
            )));
        }
        if let Some(c) = r.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(CommandError::invalid(format!("resource pattern {r:?} contains {c:?}")));
        }
        Ok(())
    }

    fn matches(&self, access: &Access, deny_covers_admin: bool) -> bool {
        // `admin` includes read and write, so denying either denies it too.
        let action = self.action.covers(access.action)
            || (deny_covers_admin && self.effect == Effect::Deny && access.action == Action::Admin);
        action && pattern_matches(&self.resource, &access.resource)
    }
}

/// `secrets:/team-a/*` and `secrets:team-a/*` mean the same: paths are
/// stored without a leading slash.
pub fn normalize_resource(r: &str) -> String {
    match r.strip_prefix("secrets:/") {
        Some(rest) => format!("secrets:{rest}"),
        None => r.to_string(),
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let effect = match self.effect {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        };
        write!(f, "{effect} {} {}", self.action.as_str(), self.resource)
    }
}

/// Whether some action is covered by both.
fn actions_overlap(a: Action, b: Action) -> bool {
    [Action::Read, Action::Write, Action::Admin].into_iter().any(|x| a.covers(x) && b.covers(x))
}

/// Whether every resource `inner` names is one `outer` names.
fn pattern_covers(outer: &str, inner: &str) -> bool {
    match (outer.strip_suffix('*'), inner.strip_suffix('*')) {
        (Some(o), Some(i)) => i.starts_with(o),
        (Some(o), None) => inner.starts_with(o),
        (None, Some(_)) => false,
        (None, None) => outer == inner,
    }
}

/// Whether some resource is named by both.
pub(crate) fn patterns_overlap(a: &str, b: &str) -> bool {
    match (a.strip_suffix('*'), b.strip_suffix('*')) {
        (Some(x), Some(y)) => x.starts_with(y) || y.starts_with(x),
        (Some(x), None) => b.starts_with(x),
        (None, Some(y)) => a.starts_with(y),
        (None, None) => a == b,
    }
}

fn pattern_matches(pattern: &str, resource: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => resource.starts_with(prefix),
        None => pattern == resource,
    }
}

/// What a request needs: an action on a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub action: Action,
    pub resource: String,
}

impl Access {
    pub fn new(action: Action, resource: impl Into<String>) -> Access {
        Access { action, resource: resource.into() }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.action.as_str(), self.resource)
    }
}

/// The role every bootstrap creates; it cannot be changed or deleted.
pub const ADMIN_ROLE: &str = "admin";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    /// Keys are hashed: the name lives in the (encrypted) value, for listing.
    pub name: String,
    pub rules: Vec<Rule>,
    pub created_revision: u64,
    pub updated_revision: u64,
    pub updated_ms: u64,
}

pub fn validate_rules(rules: &[Rule]) -> Result<(), CommandError> {
    if rules.len() > ROLE_RULES_MAX {
        return Err(CommandError::new(
            ErrorCode::ResourceExhausted,
            format!("a role has at most {ROLE_RULES_MAX} rules, got {}", rules.len()),
        ));
    }
    rules.iter().try_for_each(Rule::validate)
}

/// A user or a service client.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalRecord {
    /// Keys are hashed: the name lives in the (encrypted) value, for listing.
    pub name: String,
    /// Users: an argon2id PHC string. Clients: hex SHA-256 of the generated
    /// secret (high entropy, so a fast hash is enough).
    pub credential: String,
    pub enabled: bool,
    pub roles: Vec<String>,
    /// Tokens carry the epoch they were issued under; it changes when the
    /// principal is disabled, so its old tokens die for good.
    pub epoch: u64,
    pub created_revision: u64,
    pub created_ms: u64,
    pub updated_revision: u64,
    pub updated_ms: u64,
    /// Times of recent failed logins (users), at most the lockout threshold.
    pub failed_logins_ms: Vec<u64>,
    /// Locked while the state-machine clock is below this.
    pub locked_until_ms: u64,
}

impl fmt::Debug for PrincipalRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrincipalRecord")
            .field("name", &self.name)
            .field("credential", &crate::command::Redacted(self.credential.as_bytes()))
            .field("enabled", &self.enabled)
            .field("roles", &self.roles)
            .field("epoch", &self.epoch)
            .field("locked_until_ms", &self.locked_until_ms)
            .finish_non_exhaustive()
    }
}

impl PrincipalRecord {
    pub fn new(name: String, credential: String, roles: Vec<String>, revision: u64, now_ms: u64) -> Self {
        PrincipalRecord {
            name,
            credential,
            enabled: true,
            roles,
            epoch: revision,
            created_revision: revision,
            created_ms: now_ms,
            updated_revision: revision,
            updated_ms: now_ms,
            failed_logins_ms: Vec::new(),
            locked_until_ms: 0,
        }
    }

    pub fn locked(&self, now_ms: u64) -> bool {
        self.locked_until_ms > now_ms
    }
}

pub fn principal_record(r: &impl Read, p: &Principal) -> Result<Option<PrincipalRecord>, DbError> {
    r.get(p.cf(), &r.name_key(p.cf(), p.name())?)
}

/// The stored half of an access token: the token itself is never stored,
/// only its SHA-256 (the key of this record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub principal: Principal,
    pub epoch: u64,
    /// For service clients: the roles this token may use (OAuth scopes);
    /// `None` for users (all of the user's roles).
    pub scopes: Option<Vec<String>>,
    pub issued_ms: u64,
    pub expires_ms: u64,
    /// Renewals never extend past this.
    pub renew_until_ms: u64,
}

pub type TokenHash = [u8; 32];

/// Key of a token in `TokensByExpiry`: expiry first, for pruning.
pub fn token_expiry_key(expires_ms: u64, hash: &TokenHash) -> Vec<u8> {
    let mut k = expires_ms.to_be_bytes().to_vec();
    k.extend_from_slice(hash);
    k
}

/// An authenticated caller and the roles it acts with.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub token_hash: TokenHash,
    pub token: TokenRecord,
    /// The roles this token acts with (after scopes), existing ones only.
    pub role_names: Vec<String>,
    roles: Vec<RoleRecord>,
    /// A deny rule also withholds `admin` (see `Read::deny_covers_admin`).
    deny_covers_admin: bool,
}

impl Caller {
    /// Roughly the heap this caller holds (its roles' rules dominate).
    pub fn approx_bytes(&self) -> usize {
        let strings =
            |r: &RoleRecord| r.name.len() + r.rules.iter().map(|x| 32 + x.resource.len()).sum::<usize>();
        std::mem::size_of::<Caller>()
            + self.role_names.iter().map(|n| 24 + n.len()).sum::<usize>()
            + self.roles.iter().map(|r| std::mem::size_of::<RoleRecord>() + strings(r)).sum::<usize>()
    }

    /// Whether `other` acts with the same rights (roles, their rules, the
    /// deny-covers-admin rule): a stream filtered by rights ends when they
    /// change rather than quietly skipping what it may no longer read.
    pub fn same_rights(&self, other: &Caller) -> bool {
        // Names and rules only: re-saving a role unchanged moves its
        // revision, not anyone's rights.
        let same_roles = self.roles.len() == other.roles.len()
            && self.roles.iter().zip(&other.roles).all(|(a, b)| a.name == b.name && a.rules == b.rules);
        self.principal == other.principal && same_roles && self.deny_covers_admin == other.deny_covers_admin
    }

    pub fn allows(&self, access: &Access) -> bool {
        let rules = || {
            self.roles
                .iter()
                .flat_map(|r| r.rules.iter())
                .filter(|r| r.matches(access, self.deny_covers_admin))
        };
        let mut matching = rules();
        let any_allow = matching.any(|r| r.effect == Effect::Allow);
        any_allow && !rules().any(|r| r.effect == Effect::Deny)
    }

    /// Whether some allow rule grants `action` on some resource under
    /// `prefix` (`ledgers:`): a check that depends on no record, for reads
    /// that skip the records a caller may not see. Deny rules are not
    /// weighed: they only narrow what such a read then shows.
    pub fn may_on_some(&self, action: Action, prefix: &str) -> bool {
        self.roles.iter().flat_map(|r| r.rules.iter()).any(|r| {
            r.effect == Effect::Allow
                && r.action.covers(action)
                && match r.resource.strip_suffix('*') {
                    Some(p) => p.starts_with(prefix) || prefix.starts_with(p),
                    None => r.resource.starts_with(prefix),
                }
        })
    }

    /// Whether this caller may itself do everything `rule` allows: one of
    /// its allow rules covers the rule's action and every resource it
    /// names, and none of its deny rules touches any of them. A deny rule
    /// counts as the rights it withholds: taking it away (deleting or
    /// rewriting its role, unassigning it) hands them back, so only a
    /// caller that holds them manages it. Conservative: rights split over
    /// several rules of the caller do not add up to a wider pattern.
    pub fn holds(&self, rule: &Rule) -> bool {
        let rules = || self.roles.iter().flat_map(|r| r.rules.iter());
        rules().any(|r| {
            r.effect == Effect::Allow
                && r.action.covers(rule.action)
                && pattern_covers(&r.resource, &rule.resource)
        }) && !rules().any(|r| {
            r.effect == Effect::Deny
                && actions_overlap(r.action, rule.action)
                && patterns_overlap(&r.resource, &rule.resource)
        })
    }

    /// Delegation never escalates (as a Vault token creates only children
    /// with a subset of its policies): a caller hands out, edits, or acts on
    /// the holder of, only rights it holds itself. Without this, `admin` on
    /// `users` or `roles` alone would be the whole cluster: create a user
    /// with the admin role, or reset the first admin's password.
    pub fn require_holds(&self, rules: &[Rule], what: &str) -> Result<(), CommandError> {
        let Some(r) = rules.iter().find(|r| !self.holds(r)) else { return Ok(()) };
        let cut = self.roles.iter().flat_map(|x| x.rules.iter()).find(|d| {
            d.effect == Effect::Deny
                && actions_overlap(d.action, r.action)
                && patterns_overlap(&d.resource, &r.resource)
        });
        let why = match cut {
            Some(d) => format!("that carries `{r}`, which its own `{d}` cuts"),
            None => format!("that carries `{r}`, which it does not hold itself"),
        };
        Err(CommandError::new(
            ErrorCode::PermissionDenied,
            format!(
                "{} may not {what}: {why} (rights are handed out or managed only by a caller that holds them)",
                self.principal
            ),
        ))
    }

    pub fn require(&self, access: &Access) -> Result<(), CommandError> {
        if self.allows(access) {
            return Ok(());
        }
        Err(CommandError::new(ErrorCode::PermissionDenied, format!("{} may not {access}", self.principal)))
    }
}

fn unauthenticated(why: &str) -> CommandError {
    CommandError::new(ErrorCode::Unauthenticated, why)
}

/// Resolves a token hash to its caller as of `now_ms`. `Ok(Err(_))` is a
/// refusal (UNAUTHENTICATED), `Err(_)` a storage failure.
pub fn resolve(
    r: &impl Read,
    hash: &TokenHash,
    now_ms: u64,
) -> Result<Result<Caller, CommandError>, DbError> {
    let Some(token) = r.get::<TokenRecord>(Cf::Tokens, hash)? else {
        // An expired token is pruned a moment after it expires: then it
        // is unknown here, and the refusal must not rule expiry out.
        if r.refusal_wording() >= set_state_version::UNKNOWN_TOKENS_MAY_HAVE_EXPIRED {
            return Ok(Err(unauthenticated("the token is unknown, expired or revoked; log in again")));
        }
        return Ok(Err(unauthenticated("the token is unknown or revoked; log in again")));
    };
    if token.expires_ms <= now_ms {
        return Ok(Err(unauthenticated("the token has expired; log in again")));
    }
    let Some(rec) = principal_record(r, &token.principal)? else {
        return Ok(Err(unauthenticated("the token's principal no longer exists")));
    };
    if !rec.enabled || rec.epoch != token.epoch {
        if r.refusal_wording() < set_state_version::PRECISE_TOKEN_REFUSALS {
            return Ok(Err(unauthenticated("the token's principal is disabled or was re-created")));
        }
        let p = &token.principal;
        return Ok(Err(unauthenticated(&if !rec.enabled {
            format!("{p} is disabled; once an administrator enables it again, log in again")
        } else {
            format!(
                "the token predates the last change to {p}'s credentials (a password set or changed, \
                 a client secret rotated, or the principal disabled and enabled again or re-created); \
                 log in again"
            )
        })));
    }
    let mut roles = Vec::new();
    let mut role_names = Vec::new();
    for name in &rec.roles {
        let in_scope = token.scopes.as_ref().is_none_or(|s| s.contains(name));
        if let Some(mut role) = r.get::<RoleRecord>(Cf::Roles, &r.name_key(Cf::Roles, name)?)? {
            if in_scope {
                role_names.push(name.clone());
            } else {
                // A scope narrows what a token may do, never widens it: the
                // deny rules of the roles it leaves out still hold.
                role.rules.retain(|x| x.effect == Effect::Deny);
                if role.rules.is_empty() {
                    continue;
                }
            }
            roles.push(role);
        }
    }
    Ok(Ok(Caller {
        principal: token.principal.clone(),
        token_hash: *hash,
        token,
        role_names,
        roles,
        deny_covers_admin: r.deny_covers_admin(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(rules: &[(Effect, Action, &str)]) -> RoleRecord {
        RoleRecord {
            name: "test".into(),
            rules: rules
                .iter()
                .map(|(e, a, r)| Rule { effect: *e, action: *a, resource: r.to_string() })
                .collect(),
            created_revision: 1,
            updated_revision: 1,
            updated_ms: 0,
        }
    }

    /// Some rule could grant the action under the prefix: exact names,
    /// wider and narrower patterns; other actions and prefixes do not.
    #[test]
    fn may_on_some_sees_any_rule_that_could_reach_under_a_prefix() {
        use Action::{Admin, Read, Write};
        let on = |rules: &[(Effect, Action, &str)], action| {
            caller(vec![role(rules)]).may_on_some(action, "ledgers:")
        };
        for granted in ["ledgers:7", "ledgers:7*", "ledgers:*", "ledgers*", "*"] {
            assert!(on(&[(Effect::Allow, Read, granted)], Read), "{granted}");
            assert!(on(&[(Effect::Allow, Admin, granted)], Read), "admin covers read: {granted}");
        }
        assert!(!on(&[(Effect::Allow, Write, "ledgers:7")], Read), "write is not read");
        assert!(!on(&[(Effect::Allow, Read, "secrets:*")], Read));
        assert!(on(&[(Effect::Allow, Read, "ledger*")], Read), "ledger* reaches ledgers:7");
        assert!(!on(&[(Effect::Allow, Read, "ledgerz*")], Read));
        assert!(!on(&[(Effect::Deny, Read, "ledgers:*")], Read), "a deny grants nothing");
        assert!(!on(&[], Read));
    }

    /// The request-side cache is bounded by bytes as well as by count: a
    /// caller with large roles must not let 4,096 entries hold gigabytes.
    #[test]
    fn the_caller_cache_stays_within_its_byte_bound() {
        use crate::caller_cache::{CallerCache, CALLER_CACHE_BYTES_MAX};
        let long = "x".repeat(1000);
        let rules: Vec<(Effect, Action, &str)> =
            (0..64).map(|_| (Effect::Allow, Action::Read, long.as_str())).collect();
        let big = caller(vec![role(&rules); 32]);
        let per = big.approx_bytes();
        assert!(per > 32 * 64 * 1000, "the estimate counts the rules: {per}");
        let cache = CallerCache::default();
        for i in 0..64 {
            let mut c = big.clone();
            c.token_hash = [0; 32];
            c.token_hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
            cache.store(cache.generation(), c);
            assert!(
                cache.len() * per <= CALLER_CACHE_BYTES_MAX,
                "{} callers of {per} bytes kept",
                cache.len()
            );
        }
        assert!(cache.len() >= 1);
    }

    fn caller(roles: Vec<RoleRecord>) -> Caller {
        let p = Principal::User("u".into());
        Caller {
            principal: p.clone(),
            token_hash: [0; 32],
            token: TokenRecord {
                principal: p,
                epoch: 1,
                scopes: None,
                issued_ms: 0,
                expires_ms: 1,
                renew_until_ms: 1,
            },
            role_names: vec![],
            roles,
            deny_covers_admin: true,
        }
    }

    #[test]
    fn deny_by_default_and_deny_wins() {
        use Action::*;
        use Effect::*;
        let nobody = caller(vec![]);
        assert!(!nobody.allows(&Access::new(Read, "secrets:a")));
        let c = caller(vec![
            role(&[(Allow, Read, "secrets:team-a/*"), (Allow, Admin, "users")]),
            role(&[(Deny, Read, "secrets:team-a/root/*")]),
        ]);
        assert!(c.allows(&Access::new(Read, "secrets:team-a/db/password")));
        assert!(!c.allows(&Access::new(Write, "secrets:team-a/db/password")), "read does not imply write");
        assert!(!c.allows(&Access::new(Read, "secrets:team-a/root/key")), "explicit deny wins");
        assert!(!c.allows(&Access::new(Read, "secrets:team-b/x")));
        assert!(c.allows(&Access::new(Write, "users")), "admin covers write");
        assert!(!c.allows(&Access::new(Read, "users:x")), "no pattern, exact match only");
    }

    #[test]
    fn leading_slash_in_secret_patterns_is_normalised() {
        assert_eq!(normalize_resource("secrets:/team-a/*"), "secrets:team-a/*");
        assert_eq!(normalize_resource("ledger:7"), "ledger:7");
    }
}
