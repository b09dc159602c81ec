//! revocation: a client logs in, uses its token (WhoAmI, a linearizable
//! read that authenticates), has it revoked through a different node, then
//! keeps using it. Once a revoke is acknowledged, no use that starts later
//! may succeed. The history names tokens by label, never by value.

use serde_json::{json, Value};
use strongbox_proto::v1::auth_client::AuthClient;
use strongbox_proto::v1::{LoginRequest, RevokeRequest, WhoAmIRequest};
use zeroize::Zeroizing;

use super::{op, Client, Ctx, Effect};
use jepsen::history::OpType;

const USES_BEFORE: u32 = 2;
const USES_AFTER: u32 = 3;
const TOKEN_TTL_S: u64 = 600;

#[derive(Default)]
pub struct ClientState {
    token: Option<(String, Zeroizing<String>)>,
    issued: u64,
    uses: u32,
    revoked: bool,
}

pub struct Revocation;

impl Revocation {
    pub async fn step(&self, ctx: &Ctx, c: &mut Client) {
        let Some((label, token)) = c.revocation.token.clone() else {
            return self.login(ctx, c).await;
        };
        let st = &c.revocation;
        if !st.revoked && st.uses >= USES_BEFORE {
            let mut auth = AuthClient::new(ctx.admin(c.node % ctx.nodes() + 1));
            let call = async {
                let req = RevokeRequest { options: None, token: token.to_string() };
                auth.revoke(req).await?;
                Ok::<Value, tonic::Status>(json!(label))
            };
            let (t, _) = op(&ctx.rec, c, "revoke", json!(label), Effect::Write, call).await;
            match t {
                OpType::Ok => (c.revocation.revoked, c.revocation.uses) = (true, 0),
                // Unknown or refused: start over with a new token.
                _ => c.revocation.token = None,
            }
            return;
        }
        let mut auth = AuthClient::new(ctx.with_token(c.node, &token));
        let call = async {
            auth.who_am_i(WhoAmIRequest { options: None }).await?;
            Ok::<Value, tonic::Status>(json!(label))
        };
        op(&ctx.rec, c, "use", json!(label), Effect::Read, call).await;
        c.revocation.uses += 1;
        if c.revocation.revoked && c.revocation.uses >= USES_AFTER {
            c.revocation = ClientState { issued: c.revocation.issued, ..ClientState::default() };
        }
    }

    async fn login(&self, ctx: &Ctx, c: &mut Client) {
        c.revocation.issued += 1;
        let label = format!("p{}-t{}", c.process, c.revocation.issued);
        let mut auth = AuthClient::new(ctx.plain(c.node));
        let password = ctx.admin_password.clone();
        // The token stays out of the history: the op's value is the label.
        let mut issued: Option<Zeroizing<String>> = None;
        let call = async {
            let req = LoginRequest { username: "admin".into(), password, ttl_seconds: TOKEN_TTL_S };
            issued = Some(Zeroizing::new(auth.login(req).await?.into_inner().access_token));
            Ok::<Value, tonic::Status>(json!(label))
        };
        let (t, _) = op(&ctx.rec, c, "login", json!(label), Effect::Write, call).await;
        if let (OpType::Ok, Some(token)) = (t, issued) {
            c.revocation.token = Some((label, token));
        }
    }
}
