//! register: read, write and compare-and-set on secrets, checked for
//! linearizability key by key. Keys rotate (a few live at a time, about a
//! hundred ops each) so every key's history stays small enough to search.

use std::sync::atomic::{AtomicU64, Ordering};

use jepsen::history::OpType;
use rand::Rng;
use serde_json::{json, Value};
use strongbox_proto::v1::secrets_client::SecretsClient;
use strongbox_proto::v1::{GetSecretRequest, PutSecretRequest};
use tonic::Code;

use super::{op, Client, Ctx, Effect};

/// Ops handed out before the workload moves on to fresh keys.
const OPS_PER_KEY_GROUP: u64 = 300;
/// Keys in use at once.
const KEYS_PER_GROUP: u64 = 3;

#[derive(Default)]
pub struct Register {
    ops: AtomicU64,
}

fn path(key: u64) -> String {
    format!("jepsen/register/k{key}")
}

impl Register {
    pub async fn step(&self, ctx: &Ctx, c: &mut Client) {
        let n = self.ops.fetch_add(1, Ordering::Relaxed);
        let key = (n / OPS_PER_KEY_GROUP) * KEYS_PER_GROUP + c.rng.random_range(0..KEYS_PER_GROUP);
        let mut secrets = SecretsClient::new(ctx.admin(c.node));
        let roll = c.rng.random_range(0..4);
        if roll < 2 {
            let call = async {
                let req = GetSecretRequest { options: None, path: path(key), version: 0 };
                match secrets.get(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        Ok(json!({"version": r.version, "value": String::from_utf8_lossy(&r.value)}))
                    }
                    Err(s) if s.code() == Code::NotFound => Ok(json!({"version": 0, "value": null})),
                    Err(s) => Err(s),
                }
            };
            let (t, out) = op(&ctx.rec, c, "read", json!({"key": key}), Effect::Read, call).await;
            if let (OpType::Ok, Some(v)) = (t, out) {
                c.seen_versions.insert(key, v["version"].as_u64().unwrap_or(0));
            }
            return;
        }
        let value = format!("{}-{n}", c.process);
        let (f, cas, input) = if roll == 2 {
            ("write", None, json!({"key": key, "value": value}))
        } else {
            let expected = c.seen_versions.get(&key).copied().unwrap_or(0);
            ("cas", Some(expected), json!({"key": key, "expected": expected, "value": value}))
        };
        let call = async {
            let req = PutSecretRequest {
                options: None,
                path: path(key),
                value: value.clone().into_bytes(),
                cas,
                max_versions: None,
            };
            let r = secrets.put(req).await?.into_inner();
            Ok::<Value, tonic::Status>(json!({"version": r.version}))
        };
        let (t, out) = op(&ctx.rec, c, f, input, Effect::Write, call).await;
        if let (OpType::Ok, Some(v)) = (t, out) {
            c.seen_versions.insert(key, v["version"].as_u64().unwrap_or(0));
        }
    }
}
