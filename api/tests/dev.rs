//! `strongbox dev` as a new user runs it: the binary itself, in a scratch dir.

use std::time::Duration;

/// A second `strongbox dev` on ports another process holds must say so and
/// exit, not wait out its login timeout (90 s) in silence.
#[tokio::test]
async fn dev_on_a_busy_port_fails_fast_and_names_the_port() {
    // Hold a port; the dev cluster's first client port (base + 1) is it.
    let held = loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        if l.local_addr().unwrap().port() < 65_000 {
            break l;
        }
    };
    let port = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .args(["dev", "--dir"])
        .arg(dir.path().join("dev"))
        .args(["--base-port", &(port - 1).to_string()])
        .env("STRONGBOX_PROFILE", dir.path().join("profile.toml"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("strongbox dev should give up at once on a busy port")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dev should fail; stderr: {stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "the busy port is named: {stderr}");
    assert!(stderr.contains("--base-port"), "the way out is named: {stderr}");
    assert!(
        !dir.path().join("profile.toml").exists(),
        "no profile is written for a cluster that never came up"
    );
    drop(held);
}

/// A dev cluster's addresses live in its Raft membership: run again on
/// other ports, it must refuse (and leave its configs as they were), not
/// start nodes that call peers where none listen.
#[tokio::test]
async fn dev_refuses_to_reshape_an_existing_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let dev_dir = dir.path().join("dev");
    strongbox_api::dev::prepare(&dev_dir, 3, 7100, false, Default::default()).unwrap();
    let before = std::fs::read_to_string(dev_dir.join("node1.toml")).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .args(["dev", "--dir"])
        .arg(&dev_dir)
        .args(["--base-port", "7200"])
        .env("STRONGBOX_PROFILE", dir.path().join("profile.toml"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run).await.expect("refused at once").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dev should fail; stderr: {stderr}");
    assert!(stderr.contains("127.0.0.1:7101") && stderr.contains("--fresh"), "says what and how: {stderr}");
    assert_eq!(std::fs::read_to_string(dev_dir.join("node1.toml")).unwrap(), before, "configs untouched");
}

/// Running `strongbox dev` again must not undo what the operator changed in
/// a node's config.
#[test]
fn prepare_keeps_an_edited_node_config() {
    let dir = tempfile::tempdir().unwrap();
    let dev_dir = dir.path().join("dev");
    strongbox_api::dev::prepare(&dev_dir, 3, 7100, false, Default::default()).unwrap();
    let path = dev_dir.join("node2.toml");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("secret_value_bytes_max = 65536", "secret_value_bytes_max = 1024");
    assert!(edited.contains("secret_value_bytes_max = 1024"), "the edit applies to this config format");
    std::fs::write(&path, &edited).unwrap();
    let (configs, _) = strongbox_api::dev::prepare(&dev_dir, 3, 7100, false, Default::default()).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited, "the file is kept");
    let node2 = configs.iter().find(|(_, c)| c.id == 2).unwrap();
    assert_eq!(node2.1.secret_value_bytes_max, 1024, "and read back as edited");
}

/// A node certificate from `strongbox certs` ends no later than its CA.
#[test]
fn a_node_certificate_never_outlives_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let certs = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_strongbox")).arg("certs").args(args).output().unwrap()
    };
    assert!(certs(&["create-ca", "--dir", d, "--days", "2"]).status.success());
    let out = certs(&["create-node", "--dir", d, "--name", "n1", "--host", "10.0.0.1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ca_end = (time::OffsetDateTime::now_utc() + time::Duration::days(2)).date();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("valid until {ca_end} UTC")), "{stdout}");
}

/// The README's first command as a new user runs it: `strongbox dev` comes
/// up, the CLI works from another process with no flags but the profile,
/// the new cluster's record holds no failed login (its login loop used to
/// reach a node before the first admin existed, and the failure applied
/// against the admin once it did), and Ctrl-C stops all three nodes.
#[tokio::test]
async fn dev_comes_up_serves_the_cli_and_stops_on_ctrl_c() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.toml");
    let mut dev = tokio::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .args(["dev", "--base-port", "7940", "--dir"])
        .arg(dir.path().join("dev"))
        .env("STRONGBOX_PROFILE", &profile)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(dev.stdout.take().unwrap()).lines();
    let up = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("cluster is up") {
                return;
            }
        }
        panic!("strongbox dev exited before the cluster was up");
    };
    tokio::time::timeout(Duration::from_secs(120), up).await.expect("the cluster comes up");
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
            .args(args)
            .env("STRONGBOX_PROFILE", &profile)
            .env_remove("STRONGBOX_TOKEN")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    assert!(cli(&["cluster", "status"]).contains("leader"));
    let audit = cli(&["audit", "query"]);
    assert!(audit.contains("\"bootstrap\""), "the record starts with the first admin: {audit}");
    assert!(!audit.contains("login_failure"), "no failed login on a new cluster's record: {audit}");

    let pid = dev.id().expect("running") as i32;
    // SAFETY: a plain syscall on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "SIGINT to strongbox dev");
    let status = tokio::time::timeout(Duration::from_secs(60), dev.wait()).await.expect("dev stops").unwrap();
    assert!(status.success(), "dev exits cleanly on Ctrl-C: {status:?}");
    let left =
        std::process::Command::new("pgrep").args(["-f", &dir.path().display().to_string()]).output().unwrap();
    assert!(left.stdout.is_empty(), "no node left running: {}", String::from_utf8_lossy(&left.stdout));
}
