//! The one table of what every client RPC needs. Handlers look their
//! permission up here, `strongbox permissions` prints it, and the README
//! lists it. Writes are checked again inside apply against the op's own
//! declaration (`Op::required`); a test keeps the two in step.

use strongbox_store::auth::{Access, Action};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No token (health, reflection, login, the token grant).
    Public,
    /// Any valid token; the op checks ownership itself.
    Authenticated,
    /// An action on a resource; `<...>` in the resource is the request's
    /// path, folder or similar.
    Access(Action, &'static str),
}

impl Need {
    /// The concrete access for a request about `subject`.
    pub fn access(self, subject: &str) -> Option<Access> {
        match self {
            Need::Access(action, template) => Some(Access::new(action, fill(template, subject))),
            _ => None,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Need::Public => "none (no token)".into(),
            Need::Authenticated => "any valid token".into(),
            Need::Access(a, r) => format!("{} on {r}", a.as_str()),
        }
    }
}

fn fill(template: &str, subject: &str) -> String {
    match (template.find('<'), template.find('>')) {
        (Some(a), Some(b)) if a < b => format!("{}{subject}{}", &template[..a], &template[b + 1..]),
        _ => template.to_string(),
    }
}

macro_rules! rpcs {
    ($($variant:ident = $method:literal => $need:expr;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Rpc {
            $($variant,)*
        }

        impl Rpc {
            pub const ALL: &'static [Rpc] = &[$(Rpc::$variant,)*];

            /// `Service/Method`, as in the gRPC path `/strongbox.v1.Service/Method`.
            pub fn method(self) -> &'static str {
                match self {
                    $(Rpc::$variant => $method,)*
                }
            }

            pub fn need(self) -> Need {
                use Action::*;
                use Need::*;
                match self {
                    $(Rpc::$variant => $need,)*
                }
            }
        }
    };
}

rpcs! {
    SecretsPut = "Secrets/Put" => Access(Write, "secrets:<path>");
    SecretsGet = "Secrets/Get" => Access(Read, "secrets:<path>");
    SecretsDelete = "Secrets/Delete" => Access(Write, "secrets:<path>");
    SecretsUndelete = "Secrets/Undelete" => Access(Write, "secrets:<path>");
    SecretsDeleteVersions = "Secrets/DeleteVersions" => Access(Write, "secrets:<path>");
    SecretsUndeleteVersions = "Secrets/UndeleteVersions" => Access(Write, "secrets:<path>");
    SecretsDestroy = "Secrets/Destroy" => Access(Write, "secrets:<path>");
    SecretsList = "Secrets/List" => Access(Read, "secrets:<folder>/");
    SecretsMetadata = "Secrets/Metadata" => Access(Read, "secrets:<path>");
    SecretsPurge = "Secrets/Purge" => Access(Admin, "secrets:<path>");
    SecretsUpdateMetadata = "Secrets/UpdateMetadata" => Access(Write, "secrets:<path>");
    AuthLogin = "Auth/Login" => Public;
    AuthClientToken = "Auth/ClientToken" => Public;
    AuthLogout = "Auth/Logout" => Authenticated;
    AuthRevoke = "Auth/Revoke" => Authenticated;
    AuthRenew = "Auth/Renew" => Authenticated;
    AuthWhoAmI = "Auth/WhoAmI" => Authenticated;
    AuthIntrospect = "Auth/Introspect" => Access(Read, "tokens");
    AuthChangePassword = "Auth/ChangePassword" => Authenticated;
    UsersCreate = "Users/Create" => Access(Admin, "users");
    UsersGet = "Users/Get" => Access(Read, "users");
    UsersList = "Users/List" => Access(Read, "users");
    UsersDelete = "Users/Delete" => Access(Admin, "users");
    UsersDisable = "Users/Disable" => Access(Admin, "users");
    UsersEnable = "Users/Enable" => Access(Admin, "users");
    UsersSetPassword = "Users/SetPassword" => Access(Admin, "users");
    UsersUnlock = "Users/Unlock" => Access(Admin, "users");
    ClientsCreate = "Clients/Create" => Access(Admin, "clients");
    ClientsGet = "Clients/Get" => Access(Read, "clients");
    ClientsList = "Clients/List" => Access(Read, "clients");
    ClientsDelete = "Clients/Delete" => Access(Admin, "clients");
    ClientsDisable = "Clients/Disable" => Access(Admin, "clients");
    ClientsEnable = "Clients/Enable" => Access(Admin, "clients");
    ClientsRotateSecret = "Clients/RotateSecret" => Access(Admin, "clients");
    RolesPut = "Roles/Put" => Access(Admin, "roles");
    RolesGet = "Roles/Get" => Access(Read, "roles");
    RolesList = "Roles/List" => Access(Read, "roles");
    RolesDelete = "Roles/Delete" => Access(Admin, "roles");
    RolesAssign = "Roles/Assign" => Access(Admin, "roles");
    RolesUnassign = "Roles/Unassign" => Access(Admin, "roles");
    KeysStatus = "Keys/Status" => Access(Read, "keys");
    KeysRotateDataKey = "Keys/RotateDataKey" => Access(Admin, "keys");
    KeysRotateMasterKey = "Keys/RotateMasterKey" => Access(Admin, "keys");
    LedgerCreateAccounts = "Ledger/CreateAccounts" => Access(Write, "ledgers:<ledger>");
    LedgerCreateTransfers = "Ledger/CreateTransfers" => Access(Write, "ledgers:<ledger>");
    LedgerLookupAccounts = "Ledger/LookupAccounts" => Access(Read, "ledgers:<ledger>");
    LedgerLookupTransfers = "Ledger/LookupTransfers" => Access(Read, "ledgers:<ledger>");
    LedgerGetAccountTransfers = "Ledger/GetAccountTransfers" => Access(Read, "ledgers:<ledger>");
    LedgerGetAccountBalances = "Ledger/GetAccountBalances" => Access(Read, "ledgers:<ledger>");
    AuditQuery = "Audit/Query" => Access(Read, "audit");
    AuditVerify = "Audit/Verify" => Access(Read, "audit");
    // Each event also needs read on what it is about (see services/feed.rs);
    // the stream carries only the events the caller may read.
    FeedWatch = "Feed/Watch" => Authenticated;
    ClusterStatus = "Cluster/Status" => Access(Read, "cluster");
    ClusterAddLearner = "Cluster/AddLearner" => Access(Admin, "cluster");
    ClusterPromote = "Cluster/Promote" => Access(Admin, "cluster");
    ClusterRemove = "Cluster/Remove" => Access(Admin, "cluster");
    ClusterTransferLeader = "Cluster/TransferLeader" => Access(Admin, "cluster");
    ClusterSetStateVersion = "Cluster/SetStateVersion" => Access(Admin, "cluster");
    ClusterStateHash = "Cluster/StateHash" => Access(Admin, "cluster");
    // A backup holds every secret: only a rule on `*` itself covers it.
    ClusterSaveSnapshot = "Cluster/SaveSnapshot" => Access(Admin, "*");
}

/// The table as Markdown (README, `strongbox permissions`).
pub fn markdown() -> String {
    let mut out = String::from("| RPC | needs |\n|---|---|\n");
    for rpc in Rpc::ALL {
        out.push_str(&format!("| `{}` | {} |\n", rpc.method(), rpc.need().describe()));
    }
    out.push_str("| `grpc.health.v1.Health/*`, reflection | none (no token) |\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_take_the_subject() {
        let a = Rpc::SecretsGet.need().access("team-a/db").unwrap();
        assert_eq!(a, Access::new(Action::Read, "secrets:team-a/db"));
        assert_eq!(Rpc::UsersCreate.need().access("ignored").unwrap().resource, "users");
        assert_eq!(Rpc::AuthLogin.need().access("x"), None);
    }

    #[test]
    fn the_readme_lists_the_table_as_the_code_has_it() {
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains(&markdown()),
            "README.md is out of date: paste `strongbox permissions` into it"
        );
    }

    #[test]
    fn every_rpc_of_the_client_api_is_in_the_table() {
        let set = prost_types_fds(strongbox_proto::FILE_DESCRIPTOR_SET);
        let mut methods = Vec::new();
        for (service, method) in set {
            // Served on the peer port: a member certificate, not a token.
            if service == "Recovery" {
                continue;
            }
            methods.push(format!("{service}/{method}"));
        }
        for m in &methods {
            assert!(Rpc::ALL.iter().any(|r| r.method() == m), "{m} has no entry in the permission table");
        }
        for r in Rpc::ALL {
            assert!(methods.iter().any(|m| m == r.method()), "{} is not an RPC", r.method());
        }
    }

    /// (service, method) pairs of the strongbox.v1 package.
    fn prost_types_fds(bytes: &[u8]) -> Vec<(String, String)> {
        use prost::Message;
        #[derive(Clone, PartialEq, Message)]
        struct Fds {
            #[prost(message, repeated, tag = "1")]
            file: Vec<File>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct File {
            #[prost(string, optional, tag = "2")]
            package: Option<String>,
            #[prost(message, repeated, tag = "6")]
            service: Vec<Service>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct Service {
            #[prost(string, optional, tag = "1")]
            name: Option<String>,
            #[prost(message, repeated, tag = "2")]
            method: Vec<Method>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct Method {
            #[prost(string, optional, tag = "1")]
            name: Option<String>,
        }
        let fds = Fds::decode(bytes).expect("descriptor set decodes");
        let mut out = Vec::new();
        for f in fds.file.into_iter().filter(|f| f.package.as_deref() == Some("strongbox.v1")) {
            for s in f.service {
                for m in s.method {
                    out.push((s.name.clone().unwrap_or_default(), m.name.unwrap_or_default()));
                }
            }
        }
        out
    }
}
