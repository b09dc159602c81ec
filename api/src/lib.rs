//! The strongbox server and CLI: gRPC services, TLS, configuration, the dev
//! cluster launcher. No storage logic lives here: services validate, stamp
//! time and ids into commands, and hand them to the Raft node.

pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod client;
pub mod config;
pub mod dev;
pub mod encryption;
pub mod feed_demo;
pub mod health;
pub mod leader_hint;
pub mod limits;
pub mod local_audit;
pub mod log_noise;
pub mod observe;
pub mod pulse;
pub mod refusals;
pub mod server;
pub mod services;
pub mod tls;
