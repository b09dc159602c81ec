//! One strongbox node: storage, Raft, the peer port and the client port.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use strongbox_proto::raft::v1::raft_peer_server::RaftPeerServer;
use strongbox_proto::v1::audit_server::AuditServer;
use strongbox_proto::v1::auth_server::AuthServer;
use strongbox_proto::v1::clients_server::ClientsServer;
use strongbox_proto::v1::cluster_server::ClusterServer;
use strongbox_proto::v1::feed_server::FeedServer;
use strongbox_proto::v1::keys_server::KeysServer;
use strongbox_proto::v1::ledger_server::LedgerServer;
use strongbox_proto::v1::recovery_server::RecoveryServer;
use strongbox_proto::v1::roles_server::RolesServer;
use strongbox_proto::v1::secrets_server::SecretsServer;
use strongbox_proto::v1::users_server::UsersServer;
use strongbox_raft::config::PEER_MESSAGE_BYTES_MAX;
use strongbox_raft::network::PeerChannels;
use strongbox_raft::peer_service::PeerService;
use strongbox_raft::{NodeInfo, RaftNode};
use strongbox_store::Db;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::auth::Auth;
use crate::config::NodeConfig;
use crate::leader_hint::LeaderHint;
use crate::limits::{
    CLIENT_PENDING_RESETS_MAX, CONCURRENCY_PER_CONNECTION_MAX, PEER_PENDING_RESETS_MAX, REQUEST_BYTES_MAX,
};
use crate::services::audit::AuditService;
use crate::services::auth::AuthService;
use crate::services::clients::ClientsService;
use crate::services::cluster::ClusterService;
use crate::services::feed::FeedService;
use crate::services::keys::KeysService;
use crate::services::ledger::LedgerService;
use crate::services::roles::RolesService;
use crate::services::secrets::SecretsService;
use crate::services::users::UsersService;
use crate::services::Api;

/// Runs a node until `shutdown` resolves, then stops it cleanly.
pub async fn run(cfg: NodeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Read the clock offset now, so a bad value stops the node at start.
    let offset_ms = strongbox_raft::clock::offset_ms();
    if offset_ms != 0 {
        tracing::warn!(
            offset_ms,
            "this node's clock is shifted by {} (for fault tests only)",
            strongbox_raft::clock::CLOCK_OFFSET_ENV
        );
    }
    if let Some(addr) = &cfg.metrics_addr {
        let addr: SocketAddr = addr.parse().map_err(|e| anyhow::anyhow!("metrics_addr {addr:?}: {e}"))?;
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0,
            ])?
            .install()
            .map_err(|e| anyhow::anyhow!("cannot start metrics endpoint on {addr}: {e}"))?;
    }

    let auth = std::sync::Arc::new(Auth::new(cfg.auth.clone())?);
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", cfg.data_dir.display()))?;
    // Owner only: what is in it is sealed, but its names, sizes and times
    // are nobody else's business either.
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700)) {
            // A mount point the node does not own, say: said, not fatal.
            tracing::warn!(data_dir = %cfg.data_dir.display(), error = %e, "could not make the data dir owner-only");
        }
    }
    let codec = crate::encryption::codec(&cfg)?;
    let db = Db::open(&cfg.data_dir.join("db"), codec)
        .map_err(|e| anyhow::anyhow!("cannot open storage in {}: {e}", cfg.data_dir.display()))?;
    let reencryption = std::sync::Arc::new(strongbox_store::reencrypt::Progress::default());

    let tls = match (&cfg.tls, cfg.insecure) {
        (_, true) => {
            tracing::warn!("INSECURE: TLS is off on the client and peer ports; anyone on the network can read and forge traffic");
            None
        }
        (Some(files), false) => Some(crate::tls::load(files)?),
        (None, false) => anyhow::bail!("no TLS configured and insecure is not set"),
    };

    // Bind before starting Raft: a port conflict fails fast, and clients
    // that connect early queue in the backlog instead of being refused.
    let raft_listener = TcpListener::bind(&cfg.raft_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on raft_addr {}: {e}", cfg.raft_addr))?;
    let api_listener = TcpListener::bind(&cfg.api_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on api_addr {}: {e}", cfg.api_addr))?;

    let info = NodeInfo { raft_addr: cfg.public_raft_addr(), api_addr: cfg.public_api_addr() };
    let channels = PeerChannels::new(tls.as_ref().map(|t| t.peer_client()));
    let local_log = strongbox_store::local_audit::LocalAuditLog::open(
        db.clone(),
        cfg.id,
        cfg.local_audit_retain_records,
        cfg.local_audit_fsync,
    )
    .map_err(|e| anyhow::anyhow!("cannot open the node-local audit log: {e}"))?;
    let (local_audit, local_audit_writer) = crate::local_audit::LocalAudit::start(local_log)?;
    // Claimed only once everything before Raft has worked (a start that
    // failed on a typo claims nothing), and before Raft runs a single step.
    claim_data_dir(&cfg.data_dir, cfg.id)?;
    let node = RaftNode::start(cfg.id, info.clone(), db, &cfg.raft.tuning(), channels).await?;
    if let Some(known) = node.raft.metrics().borrow().membership_config.membership().get_node(&cfg.id) {
        if *known != info {
            // Peers dial what the membership says; there is no address update.
            tracing::warn!(
                config_raft_addr = %info.raft_addr,
                config_api_addr = %info.api_addr,
                member_raft_addr = %known.raft_addr,
                member_api_addr = %known.api_addr,
                "this node's addresses differ from the cluster's membership; peers still dial the old ones \
                 (remove the node and add it again with the new addresses)"
            );
        }
    }
    let mut services = Api::new(node.clone(), auth, cfg.secret_value_bytes_max, local_audit);
    services.local_read_staleness_max = Duration::from_millis(cfg.local_read_staleness_max_ms);
    if cfg.unsafe_stale_reads {
        tracing::error!("UNSAFE: --unsafe-stale-reads is on; reads are served from local state and may be stale. This mode exists only to test the consistency harness.");
        services.unsafe_stale_reads = true;
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Keep-alive: a peer cut off by a partition leaves its long-lived
    // AppendEntries streams behind; pings find the dead connection.
    let mut peer = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .http2_max_pending_accept_reset_streams(Some(PEER_PENDING_RESETS_MAX));
    if let Some(t) = &tls {
        peer = peer.tls_config(t.peer_server())?;
    }
    let peer_svc = RaftPeerServer::new(PeerService::new(node.clone(), stop_rx.clone()))
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
    // Break-glass on the peer port: its mutual TLS is the credential.
    let recovery_svc = RecoveryServer::new(crate::services::recovery::RecoveryService::new(services.clone()))
        .max_decoding_message_size(REQUEST_BYTES_MAX);
    let peer_task = tokio::spawn(
        peer.add_service(peer_svc)
            .add_service(recovery_svc)
            .serve_with_incoming_shutdown(incoming(raft_listener), stopped(stop_rx.clone())),
    );

    let (health, health_svc) = tonic_health::server::health_reporter();
    let staleness_max = (!cfg.unsafe_stale_reads).then_some(services.local_read_staleness_max);
    // Health goes NOT_SERVING first, so load balancers move away while
    // leadership is handed off and before the servers drain.
    let (unready_tx, unready_rx) = tokio::sync::watch::channel(false);
    let health_task = tokio::spawn(crate::health::follow(health, node.clone(), staleness_max, unready_rx));
    // Both reflection versions: grpcurl speaks v1, many clients still v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(strongbox_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // The descriptor set also holds the peer protocol: list only
            // what this port serves.
            .with_service_name("strongbox.v1.Secrets")
            .with_service_name("strongbox.v1.Cluster")
            .with_service_name("strongbox.v1.Auth")
            .with_service_name("strongbox.v1.Users")
            .with_service_name("strongbox.v1.Clients")
            .with_service_name("strongbox.v1.Feed")
            .with_service_name("strongbox.v1.Audit")
            .with_service_name("strongbox.v1.Roles")
            .with_service_name("strongbox.v1.Keys")
            .with_service_name("strongbox.v1.Ledger")
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection = reflection_builder().build_v1()?;
    let reflection_alpha = reflection_builder().build_v1alpha()?;
    let mut api = Server::builder()
        .tcp_nodelay(true)
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION_MAX)
        .http2_max_pending_accept_reset_streams(Some(CLIENT_PENDING_RESETS_MAX))
        .http2_keepalive_interval(Some(Duration::from_secs(30)));
    if let Some(t) = &tls {
        api = api.tls_config(t.api_server())?;
    }
    let hint = LeaderHint::follow(&node);
    let api_task = tokio::spawn(
        // Outermost (a Server's first layer wraps the later ones): it sees
        // the status as restated.
        api.layer(crate::refusals::AuditRefusalsLayer::new(services.clone()))
            .layer(tower::util::MapResponseLayer::new(move |r| {
                crate::observe::restate_oversize(hint.stamp(r))
            }))
            .add_service(health_svc)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(
                SecretsServer::new(SecretsService::new(services.clone()))
                    .max_decoding_message_size(REQUEST_BYTES_MAX),
            )
            .add_service(
                ClusterServer::new(ClusterService::new(services.clone()))
                    .max_decoding_message_size(REQUEST_BYTES_MAX),
            )
            .add_service(
                AuthServer::new(AuthService::new(services.clone()))
                    .max_decoding_message_size(REQUEST_BYTES_MAX),
            )
            .add_service(
                UsersServer::new(UsersService::new(services.clone()))
                    .max_decoding_message_size(REQUEST_BYTES_MAX),
            )
            .add_service(
                ClientsServer::new(ClientsService::new(services.clone()))
                    .max_decoding_message_size(REQUEST_BYTES_MAX),
            )
            .add_service(
                RolesServer::new(RolesService::new(services.clone()))
                    .max_decoding_message_size(REQUEST_BYTES_MAX),
            )
            .add_service(
                LedgerServer::new(LedgerService::new(services.clone()))
                    .max_decoding_message_size(REQUEST_BYTES_MAX),
            )
            .add_service(
                AuditServer::new(AuditService::new(services.clone()))
                    .max_decoding_message_size(REQUEST_BYTES_MAX),
            )
            .add_service(
                FeedServer::new(FeedService::new(services.clone(), stop_rx.clone()))
                    .max_decoding_message_size(REQUEST_BYTES_MAX),
            )
            .add_service(
                KeysServer::new(KeysService::new(services.clone(), cfg.clone(), reencryption.clone()))
                    .max_decoding_message_size(REQUEST_BYTES_MAX),
            )
            .serve_with_incoming_shutdown(incoming(api_listener), stopped(stop_rx.clone())),
    );

    tracing::info!(id = cfg.id, api = %cfg.api_addr, raft = %cfg.raft_addr, "node started");
    let bootstrap_task = maybe_initialize(&cfg, &node)
        .await?
        .then(|| tokio::spawn(crate::bootstrap::run(services.clone(), cfg.data_dir.clone())));
    let metrics_task = tokio::spawn(export_raft_metrics(node.clone()));
    let pulse_task = tokio::spawn(crate::pulse::run(services.clone()));
    let reencrypt_task =
        tokio::spawn(crate::encryption::reencrypt_in_background(node.sm.db().clone(), reencryption));

    shutdown.await;
    tracing::info!("shutting down");
    node.begin_stop();
    let _ = unready_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(1), health_task).await;
    // A hand-off waits out the voters' leader lease (openraft's, up to one
    // election timeout once heartbeats stop), then takes a round trip; one
    // that does not come off ends at a refusal or an unanswered trigger,
    // or at twice the longest election timeout.
    let hand_off_budget = Duration::from_millis(2 * node.raft.config().election_timeout_max);
    match node.hand_off_leadership(hand_off_budget).await {
        None => {}
        Some(Ok(Some(to))) if to != node.id => tracing::info!(to, "handed leadership over before stopping"),
        Some(Ok(_)) => tracing::warn!("leadership was not handed over before stopping"),
        Some(Err(why)) => {
            tracing::warn!(why = why.as_str(), "leadership was not handed over before stopping")
        }
    }
    let _ = stop_tx.send(true);
    metrics_task.abort();
    pulse_task.abort();
    reencrypt_task.abort();
    if let Some(t) = bootstrap_task {
        t.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), peer_task).await;
    let _ = node.raft.shutdown().await;
    // Apply writes the state machine without the WAL: flushed now, so the
    // next start has nothing to re-apply from the log.
    let db = node.sm.db().clone();
    let flushed =
        tokio::task::spawn_blocking(move || db.persist_unlogged_through(0).map_err(|e| e.to_string()))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
    if let Err(e) = flushed {
        tracing::error!(error = %e, "flushing the state at shutdown failed; the next start re-applies the log");
    }
    // The node-local audit writer ends once every handle to it is gone; it
    // holds the database, which must not be closing while the process exits.
    drop(services);
    drop(node);
    let joined = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || local_audit_writer.join()),
    )
    .await;
    if !matches!(joined, Ok(Ok(Ok(())))) {
        tracing::warn!("the node-local audit writer did not stop within 5 s");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The file naming the node id a data dir belongs to.
pub const NODE_ID_FILE: &str = "node-id";

/// Ties a data dir to one node id: started under another id (configs
/// swapped between two machines), a node would run another's log as its
/// own and could vote away writes that one acknowledged. Written on the
/// first start (or the first with this build), checked on every later one.
pub fn claim_data_dir(data_dir: &std::path::Path, id: u64) -> anyhow::Result<()> {
    if check_claim(data_dir, id)? {
        return Ok(());
    }
    let path = data_dir.join(NODE_ID_FILE);
    let tmp = data_dir.join(format!("{NODE_ID_FILE}.partial"));
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

/// Whether the data dir is claimed by `id` (Ok(false): by nobody yet);
/// another id is an error. Reads only.
pub fn check_claim(data_dir: &std::path::Path, id: u64) -> anyhow::Result<bool> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let owner: u64 = text
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{} does not hold a node id ({text:?})", path.display()))?;
            anyhow::ensure!(
                owner == id,
                "data dir {} belongs to node {owner}, and this config says id = {id}: a node must never start \
                 on another's data (were two configs swapped?)",
                data_dir.display()
            );
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Accepted connections with Nagle off: `Server::tcp_nodelay` only applies
/// to listeners tonic binds itself, and Nagle + delayed ACK adds ~40 ms
/// stalls to small request/response exchanges.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The node with the smallest id among `initial_members` initializes a
/// pristine cluster, exactly once; every other start is a no-op. True for
/// that node (it also creates the first admin).
async fn maybe_initialize(cfg: &NodeConfig, node: &RaftNode) -> anyhow::Result<bool> {
    let Some((&first, _)) = cfg.initial_members.first_key_value() else {
        return Ok(false);
    };
    if first != cfg.id {
        return Ok(false);
    }
    let members: BTreeMap<u64, NodeInfo> = cfg
        .initial_members
        .iter()
        .map(|(id, m)| (*id, NodeInfo { raft_addr: m.raft_addr.clone(), api_addr: m.api_addr.clone() }))
        .collect();
    if node.initialize(members).await? {
        tracing::info!(members = ?cfg.initial_members.keys().collect::<Vec<_>>(), "initialized a new cluster");
    }
    Ok(true)
}

/// Mirrors openraft's metrics into Prometheus gauges once a second. (Not on
/// every change: openraft's metrics change on every heartbeat ack, and
/// reading the committed index itself touches the core.)
async fn export_raft_metrics(node: RaftNode) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Peers with per-peer replication series: zeroed once this node no
    // longer replicates to them (stepped down, or the peer was removed),
    // so a lag alert does not fire on a value frozen at the last term led.
    let mut exported: std::collections::BTreeSet<String> = Default::default();
    loop {
        tick.tick().await;
        let m = node.raft.metrics().borrow().clone();
        metrics::gauge!("strongbox_raft_term").set(m.current_term as f64);
        metrics::gauge!("strongbox_raft_is_leader").set(if m.state == openraft::ServerState::Leader {
            1.0
        } else {
            0.0
        });
        // A leader cut off from its quorum stays "leader" in openraft 0.9
        // (it is only silenced): this says how long since it was in step.
        match node.local_read_age() {
            Some(age) => metrics::gauge!("strongbox_leader_contact_age_seconds").set(age.as_secs_f64()),
            None => metrics::gauge!("strongbox_leader_contact_age_seconds").set(f64::INFINITY),
        }
        metrics::gauge!("strongbox_raft_leader_id").set(m.current_leader.map_or(0.0, |l| l as f64));
        let last = m.last_log_index.unwrap_or(0);
        metrics::gauge!("strongbox_raft_last_log_index").set(last as f64);
        metrics::gauge!("strongbox_raft_applied_index").set(m.last_applied.map_or(0.0, |l| l.index as f64));
        metrics::gauge!("strongbox_raft_snapshot_index").set(m.snapshot.map_or(0.0, |l| l.index as f64));
        let mut current = std::collections::BTreeSet::new();
        if let Some(repl) = &m.replication {
            for (peer, matched) in repl.iter() {
                let matched = matched.map_or(0, |l| l.index);
                let peer = peer.to_string();
                metrics::gauge!("strongbox_raft_peer_matched_index", "peer" => peer.clone())
                    .set(matched as f64);
                metrics::gauge!("strongbox_raft_peer_lag_entries", "peer" => peer.clone())
                    .set(last.saturating_sub(matched) as f64);
                current.insert(peer);
            }
        }
        for gone in exported.difference(&current) {
            metrics::gauge!("strongbox_raft_peer_matched_index", "peer" => gone.clone()).set(0.0);
            metrics::gauge!("strongbox_raft_peer_lag_entries", "peer" => gone.clone()).set(0.0);
        }
        exported = current;
        match node.raft.with_raft_state(|s| s.committed.map_or(0, |l| l.index)).await {
            Ok(committed) => metrics::gauge!("strongbox_raft_committed_index").set(committed as f64),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_is_claimed_once_and_refused_to_another_id() {
        let dir = tempfile::tempdir().unwrap();
        claim_data_dir(dir.path(), 2).expect("first start");
        claim_data_dir(dir.path(), 2).expect("a restart");
        let e = claim_data_dir(dir.path(), 3).expect_err("another id").to_string();
        assert!(e.contains("belongs to node 2") && e.contains("id = 3"), "{e}");
        std::fs::write(dir.path().join(NODE_ID_FILE), "two").unwrap();
        assert!(claim_data_dir(dir.path(), 2).is_err(), "an unreadable claim is not overwritten");
    }
}
