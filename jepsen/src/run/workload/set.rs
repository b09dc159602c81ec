//! set: each add writes a new secret under one folder; after the final heal
//! one linearizable listing of the folder must contain every acknowledged add.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use strongbox_proto::v1::secrets_client::SecretsClient;
use strongbox_proto::v1::{ListSecretsRequest, Page, PutSecretRequest};

use super::{op, Client, Ctx, Effect};

const FOLDER: &str = "jepsen/set";
const PAGE_SIZE: u32 = 1000;

#[derive(Default)]
pub struct Set {
    next: AtomicU64,
}

impl Set {
    pub async fn step(&self, ctx: &Ctx, c: &mut Client) {
        let element = self.next.fetch_add(1, Ordering::Relaxed);
        let mut secrets = SecretsClient::new(ctx.admin(c.node));
        let call = async {
            let req = PutSecretRequest {
                options: None,
                path: format!("{FOLDER}/e{element}"),
                value: b"member".to_vec(),
                cas: None,
                max_versions: None,
            };
            secrets.put(req).await?;
            Ok::<Value, tonic::Status>(json!(element))
        };
        op(&ctx.rec, c, "add", json!(element), Effect::Write, call).await;
    }

    /// One read through every node once the cluster has healed: each must
    /// hold every acknowledged add.
    pub async fn final_read(&self, ctx: &Ctx, c: &mut Client) {
        for node in 1..=ctx.nodes() {
            c.node = node;
            self.read(ctx, c).await;
        }
    }

    async fn read(&self, ctx: &Ctx, c: &mut Client) {
        let mut secrets = SecretsClient::new(ctx.admin(c.node));
        let call = async {
            let (mut elements, mut token) = (Vec::new(), String::new());
            loop {
                let req = ListSecretsRequest {
                    options: None,
                    folder: FOLDER.into(),
                    page: Some(Page { page_size: PAGE_SIZE, page_token: token }),
                };
                let r = secrets.list(req).await?.into_inner();
                for e in r.entries.iter().filter(|e| !e.folder) {
                    // An entry nobody added is evidence for the checker
                    // (unexpected), not a failed read.
                    match e.name.strip_prefix('e').and_then(|n| n.parse::<u64>().ok()) {
                        Some(n) => elements.push(json!(n)),
                        None => elements.push(json!(e.name)),
                    }
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
            Ok(Value::Array(elements))
        };
        op(&ctx.rec, c, "read", json!(null), Effect::Read, call).await;
    }
}
