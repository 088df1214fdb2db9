//! The deployment files in deploy/ hold settings the engine accepts, and their copies agree:
//! the compose file's and the Kubernetes manifests' settings parse with the engine's own
//! parsers, every path the image's command and the StatefulSet's arguments name is a file
//! they mount, and the example tokens are the ones deploy/README.md names. (The manifests
//! and the compose file are checked against their schemas by scripts/check-deploy.sh.)

// Tests fail loudly on any unexpected value.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use canvass_kafka::KafkaConfig;
use canvass_server::{GrpcConfig, delivery::Plan, hash_token};

fn deploy(name: &str) -> String {
    let path: PathBuf = canvass_tests::repo_root().join("deploy").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text of a block scalar `key: |` in a YAML manifest (its lines, unindented).
fn block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no `{key}: |` block"));
    let indent = header.len() - header.trim_start().len() + 2;
    let mut text = String::new();
    for line in lines {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() < indent {
            break;
        }
        text.push_str(line.get(indent..).unwrap_or(""));
        text.push('\n');
    }
    text
}

fn kafka(text: &str, what: &str) -> KafkaConfig {
    let config = KafkaConfig::from_toml(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    config.check().unwrap_or_else(|e| panic!("{what}: {e}"));
    config
}

#[test]
fn the_settings_parse_and_the_compose_and_kubernetes_copies_agree() {
    let compose_kafka = kafka(&deploy("config/kafka.toml"), "config/kafka.toml");
    let k8s_config = deploy("k8s/configmap.yaml");
    let k8s_kafka = kafka(
        &block(&k8s_config, "kafka.toml"),
        "k8s/configmap.yaml kafka.toml",
    );
    for (a, b, field) in [
        (&compose_kafka.group_id, &k8s_kafka.group_id, "group_id"),
        (
            &compose_kafka.partitioner,
            &k8s_kafka.partitioner,
            "partitioner",
        ),
        (
            &compose_kafka.topics.touchpoints,
            &k8s_kafka.topics.touchpoints,
            "topics.touchpoints",
        ),
        (
            &compose_kafka.topics.control,
            &k8s_kafka.topics.control,
            "topics.control",
        ),
        (
            &compose_kafka.topics.actions,
            &k8s_kafka.topics.actions,
            "topics.actions",
        ),
    ] {
        assert_eq!(a, b, "{field}: compose and Kubernetes");
    }
    // Several engines share the partitions: each partition's state must follow it.
    assert!(
        compose_kafka.topics.changelog.is_some(),
        "config/kafka.toml: a changelog topic"
    );
    assert_eq!(
        compose_kafka.topics.changelog, k8s_kafka.topics.changelog,
        "topics.changelog: compose and Kubernetes"
    );
    // ... and come from Kafka without replaying a partition's whole history.
    assert!(
        compose_kafka.topics.snapshots.is_some(),
        "config/kafka.toml: a snapshots topic"
    );
    assert_eq!(
        compose_kafka.topics.snapshots, k8s_kafka.topics.snapshots,
        "topics.snapshots: compose and Kubernetes"
    );
    assert_eq!(
        compose_kafka.topics.audit, k8s_kafka.topics.audit,
        "topics.audit: compose and Kubernetes"
    );
    assert!(compose_kafka.metrics_addr.is_some() && k8s_kafka.metrics_addr.is_some());

    for (text, what) in [
        (deploy("config/delivery.toml"), "config/delivery.toml"),
        (
            block(&k8s_config, "delivery.toml"),
            "k8s/configmap.yaml delivery.toml",
        ),
    ] {
        Plan::parse(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
    }

    let k8s_grpc = block(&deploy("k8s/secret.yaml"), "grpc.toml");
    for (text, what) in [
        (deploy("config/grpc.toml"), "config/grpc.toml"),
        (k8s_grpc, "k8s/secret.yaml grpc.toml"),
    ] {
        let config = GrpcConfig::parse(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!config.tokens.is_empty(), "{what}: no token");
        for token in &config.tokens {
            // The README tells operators the example tokens are `change-me-<role>`.
            let role = format!("{:?}", token.role).to_lowercase();
            assert_eq!(
                token.sha256,
                hash_token(&format!("change-me-{role}")),
                "{what}: the example token of {}",
                token.identity
            );
        }
    }
}

#[test]
fn every_settings_path_the_commands_name_is_mounted() {
    let dockerfile = deploy("Dockerfile");
    let compose = deploy("docker-compose.yml");
    for path in [
        "/etc/canvass/kafka.toml",
        "/etc/canvass/grpc.toml",
        "/etc/canvass/delivery.toml",
    ] {
        assert!(
            dockerfile.contains(&format!("\"{path}\"")),
            "the image's command names {path}"
        );
        assert!(
            compose.contains(&format!("target: {path}")),
            "the compose file mounts {path}"
        );
    }
    let statefulset = deploy("k8s/statefulset.yaml");
    for (arg, mount) in [
        (
            "/etc/canvass/kafka.toml",
            "mountPath: /etc/canvass/kafka.toml",
        ),
        (
            "/etc/canvass/delivery.toml",
            "mountPath: /etc/canvass/delivery.toml",
        ),
        (
            "/etc/canvass/secret/grpc.toml",
            "mountPath: /etc/canvass/secret",
        ),
        ("/var/lib/canvass/data", "mountPath: /var/lib/canvass"),
    ] {
        assert!(
            statefulset.contains(&format!("- {arg}")),
            "the StatefulSet's arguments name {arg}"
        );
        assert!(
            statefulset.contains(mount),
            "the StatefulSet mounts {mount}"
        );
    }
}
