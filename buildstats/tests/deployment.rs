//! The deployment files (`Dockerfile`, `docker-compose.yml`, `k8s/`) are valid for their tools
//! and agree with this binary. Offline: no Docker engine, no cluster, no servers.
//!
//! - `docker-compose.yml` passes `docker-compose config -q` (docker-compose 1.29.2);
//! - `k8s/base` and `k8s/overlays/example` render with `kubectl kustomize` (also the old
//!   kustomize built into kubectl 1.20) and pass `kubernetes-validate --strict`;
//! - every `buildstats ...` command line (compose `entrypoint`/`command`, k8s `command`/`args`
//!   of the rendered workloads, the image's `CMD`) is accepted by this binary's CLI;
//! - liveness probes are `/healthz`, readiness probes `/readyz`, on the port the role listens
//!   on (its `BUILDSTATS_*_LISTEN` from the ConfigMap / environment), which is also the
//!   containerPort, every Service targetPort and every published compose port;
//! - every `BUILDSTATS_*` name in the files is one the binary knows;
//! - gateway, query, the four sinks and retention each have a compose service and a Deployment;
//! - the Dockerfile copies every workspace crate and its entrypoint is the binary.
//!
//! The tools come from `dev/deploy-tools` (which `dev/test` runs): a missing tool fails.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_buildstats");
/// The Kubernetes version whose schemas the manifests are validated against (k8s/README.md).
const K8S_SCHEMA_VERSION: &str = "1.30.0";
const KUSTOMIZATIONS: [&str; 2] = ["k8s/base", "k8s/overlays/example"];
const INSTALL: &str = "run `dev/deploy-tools` (installs docker-compose 1.29.2 and kubernetes-validate into \
                       target/deploy-venv, and kubectl); `dev/test` runs it for you";
/// A signing key for `${BUILDSTATS_AUTH_KEYS:?...}` in docker-compose.yml (never used).
const DUMMY_AUTH_KEYS: &str = "k1:0000000000000000000000000000000000000000000000000000000000000000";
/// The server roles that every deployment runs, each as its own compose service / Deployment.
const ROLES: [&str; 7] =
    ["gateway", "query", "sink dynamodb", "sink s3", "sink opensearch", "sink influxdb", "retention run"];

// ---------------------------------------------------------------------------------------------
// Running things

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the crate is in the workspace").to_path_buf()
}

fn venv_bin(name: &str) -> PathBuf {
    let path = repo().join("target/deploy-venv/bin").join(name);
    if !path.is_file() {
        panic!("{} is missing: {INSTALL}", path.display());
    }
    path
}

/// A directory of this test process's own (the binary runs there, so no `buildstats.toml`).
fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("buildstats-deployment-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn scratch(name: &str) -> PathBuf {
    scratch_dir().join(name)
}

/// Runs `cmd` to completion (stdin from `input`); a program that cannot be started fails the
/// test with how to install it.
fn run(mut cmd: Command, input: Option<&str>) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run `{program}` ({e}): {INSTALL}"));
    let writer = input.map(|text| {
        let mut stdin = child.stdin.take().unwrap();
        let text = text.to_string();
        std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        })
    });
    let out = child.wait_with_output().unwrap();
    if let Some(w) = writer {
        w.join().unwrap();
    }
    out
}

fn shown(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// YAML (one or more documents) as JSON values, with the venv's PyYAML (no YAML crate is in
/// Cargo.lock).
fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.args([
        "-c",
        "import sys, yaml, json; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)",
    ]);
    let out = run(cmd, Some(text));
    assert!(out.status.success(), "{what} is not YAML that PyYAML reads: {}", shown(&out));
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// The binary with a clean environment: no `BUILDSTATS_*` of the caller, no dev env file, run
/// outside the repo (so no `buildstats.toml` is read).
fn buildstats_cmd(args: &[String]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BUILDSTATS_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("BUILDSTATS_ENV_FILE", scratch("no-such-env-file")).current_dir(scratch_dir());
    cmd
}

/// Runs the binary, killed if still running after 30 s (a command line the test thought would
/// stop at parsing must never serve).
fn buildstats(args: &[String], extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = buildstats_cmd(args);
    cmd.envs(extra_env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the buildstats binary starts");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("`buildstats {}` was still running after 30 s (it should stop at the config): {}", args.join(" "), shown(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// The files, as their tools see them

fn compose(args: &[&str]) -> Output {
    let mut cmd = Command::new(venv_bin("docker-compose"));
    cmd.arg("-f").arg(repo().join("docker-compose.yml")).args(args).current_dir(repo());
    cmd.env("BUILDSTATS_AUTH_KEYS", DUMMY_AUTH_KEYS).env_remove("COMPOSE_FILE").env_remove("COMPOSE_PROFILES");
    run(cmd, None)
}

/// `docker-compose config`: the file with anchors merged and variables substituted.
fn compose_config() -> Value {
    let out = compose(&["config"]);
    assert!(out.status.success(), "`docker-compose config` refuses docker-compose.yml (fix the file): {}", shown(&out));
    let mut docs = yaml_docs(&String::from_utf8_lossy(&out.stdout), "`docker-compose config` output");
    assert_eq!(docs.len(), 1, "`docker-compose config` printed one document");
    docs.remove(0)
}

fn kustomize(dir: &str) -> String {
    let mut cmd = Command::new("kubectl");
    cmd.args(["kustomize", dir]).current_dir(repo());
    let out = run(cmd, None);
    assert!(
        out.status.success(),
        "`kubectl kustomize {dir}` fails: {}\nFix the kustomization; keep to what the kustomize built into kubectl 1.20 \
         (Debian's kubernetes-client) understands, e.g. a base directory goes under `bases:`",
        shown(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn rendered(dir: &str) -> Vec<Value> {
    yaml_docs(&kustomize(dir), &format!("`kubectl kustomize {dir}` output"))
}

/// The final stage's ENTRYPOINT and CMD (exec form) of the Dockerfile.
fn image_defaults() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let last_stage = text.rsplit_once("\nFROM ").map(|(_, s)| s).unwrap_or(&text);
    let exec_form = |instruction: &str| -> Vec<String> {
        let line = last_stage
            .lines()
            .filter(|l| l.trim_start().starts_with(instruction))
            .last()
            .unwrap_or_else(|| panic!("the Dockerfile's last stage has no {instruction}"));
        let json = line.trim_start()[instruction.len()..].trim();
        serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("Dockerfile `{line}`: use the exec form, {instruction} [\"...\"] ({e})"))
    };
    (exec_form("ENTRYPOINT "), exec_form("CMD "))
}

/// `BUILDSTATS_*` variables the binary reads, with their defaults: `buildstats config env`,
/// plus the command-line options' variables (`[env: NAME=...]` in `buildstats --help`).
fn known_env() -> BTreeMap<String, String> {
    let out = buildstats(&strings(&["config", "env"]), &[]);
    assert!(out.status.success(), "`buildstats config env` fails: {}", shown(&out));
    let mut known: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(known.contains_key("BUILDSTATS_GATEWAY_LISTEN"), "`buildstats config env` lists the listen addresses");
    let help = buildstats(&strings(&["--help"]), &[]);
    assert!(help.status.success(), "`buildstats --help` fails: {}", shown(&help));
    for piece in String::from_utf8_lossy(&help.stdout).split("[env: ").skip(1) {
        let name: String = piece.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        known.entry(name).or_default();
    }
    assert!(known.contains_key("BUILDSTATS_CONFIG"), "`buildstats --help` shows the [env: ...] of --config");
    known
}

// ---------------------------------------------------------------------------------------------
// Command lines

fn is_buildstats(word: &str) -> bool {
    word == "buildstats" || word.ends_with("/buildstats")
}

/// The `buildstats` argument lists a container runs, from its argv: `buildstats ...` itself,
/// or the commands of `sh -c "buildstats ... && buildstats ..."`.
fn buildstats_lines(argv: &[String], origin: &str) -> Vec<Vec<String>> {
    let Some(first) = argv.first() else { panic!("{origin}: runs nothing") };
    if is_buildstats(first) {
        return vec![argv[1..].to_vec()];
    }
    if ["sh", "/bin/sh", "bash", "/bin/bash"].contains(&first.as_str()) && argv.len() == 3 && argv[1] == "-c" {
        let script = &argv[2];
        if let Some(c) = script.chars().find(|c| "'\"`$\\<>(){}*?#".contains(*c)) {
            panic!(
                "{origin}: the script `{script}` uses `{c}`, which this test does not parse: keep it to \
                 `buildstats ... && buildstats ...` (or teach buildstats/tests/deployment.rs)"
            );
        }
        let lines: Vec<Vec<String>> = script
            .split(|c| matches!(c, ';' | '\n' | '&' | '|'))
            .map(|part| part.split_whitespace().map(String::from).collect::<Vec<_>>())
            .filter(|words| words.first().is_some_and(|w| is_buildstats(w)))
            .map(|words| words[1..].to_vec())
            .collect();
        assert!(!lines.is_empty(), "{origin}: the script `{script}` runs no buildstats command");
        return lines;
    }
    panic!(
        "{origin}: runs `{}` in the buildstats image; this test knows `buildstats ...` and \
         `sh -c \"buildstats ... && buildstats ...\"`",
        argv.join(" ")
    )
}

/// The role a command line runs, if it is a server: "gateway", "query", "sink NAME", "retention run".
fn role(args: &[String]) -> Option<String> {
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" || a == "--env-file" {
            it.next();
        } else if !a.starts_with('-') {
            words.push(a.as_str());
        }
    }
    match words.as_slice() {
        ["gateway", ..] => Some("gateway".into()),
        ["query", ..] => Some("query".into()),
        ["sink", name, ..] => Some(format!("sink {name}")),
        ["retention", "run", ..] => Some("retention run".into()),
        _ => None,
    }
}

/// The listen address variable of a server role (ARCHITECTURE.md, "Roles and ports").
fn listen_var(role: &str) -> &'static str {
    match role.split(' ').next().unwrap() {
        "gateway" => "BUILDSTATS_GATEWAY_LISTEN",
        "query" => "BUILDSTATS_QUERY_LISTEN",
        "sink" => "BUILDSTATS_SINKS_LISTEN",
        "retention" => "BUILDSTATS_RETENTION_LISTEN",
        other => unreachable!("not a server role: {other}"),
    }
}

/// Whether the binary's CLI accepts `args`, two ways:
/// 1. `buildstats ARGS --help` exits 0 (clap reports an unknown subcommand, option or value
///    before `--help` as an error: `a_bad_command_line_is_refused`);
/// 2. `buildstats ARGS` with a config file that does not exist stops at the config (exit 1,
///    "cannot read config file"), not at the command line (clap's usage errors exit 2): this
///    also catches a missing required argument, which `--help` skips.
fn cli_verdict(args: &[String]) -> Result<(), String> {
    let line = format!("buildstats {}", args.join(" "));
    if args.iter().any(|a| matches!(a.as_str(), "--help" | "-h" | "--version" | "-V" | "help")) {
        let out = buildstats(args, &[]);
        return if out.status.success() { Ok(()) } else { Err(format!("`{line}` fails: {}", shown(&out))) };
    }
    let mut with_help = args.to_vec();
    with_help.push("--help".into());
    let out = buildstats(&with_help, &[]);
    if !out.status.success() {
        return Err(format!("`{line} --help` is refused by the CLI: {}", shown(&out)));
    }
    let missing = scratch("no-such-dir/buildstats.toml");
    let out = buildstats(args, &[("BUILDSTATS_CONFIG", missing.to_str().unwrap())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(1) && stderr.contains("cannot read config file") {
        Ok(())
    } else {
        Err(format!("`{line}` is refused by the CLI (it should only fail on the missing config file): {}", shown(&out)))
    }
}

fn assert_cli_accepts(args: &[String], origin: &str) {
    if let Err(e) = cli_verdict(args) {
        panic!(
            "{origin}: {e}\nFix the command line to match `buildstats {} --help` (or the CLI in buildstats/src/main.rs)",
            args.iter().take_while(|a| !a.starts_with('-')).cloned().collect::<Vec<_>>().join(" ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Compose

struct ComposeService {
    name: String,
    spec: Value,
    /// Each `buildstats` argument list the service runs.
    lines: Vec<Vec<String>>,
}

fn argv_field(v: &Value, origin: &str) -> Vec<String> {
    match v {
        Value::String(s) => {
            if s.contains(['\'', '"', '\\']) {
                panic!("{origin}: write `{s}` as a list, which this test reads without a shell parser");
            }
            s.split_whitespace().map(String::from).collect()
        }
        Value::Array(a) => a.iter().map(|x| x.as_str().map(String::from).unwrap_or_else(|| x.to_string())).collect(),
        other => panic!("{origin}: unexpected {other}"),
    }
}

/// The compose services that run the buildstats image: those built from the Dockerfile, and
/// those using the image a built service is tagged with.
fn compose_buildstats_services(config: &Value) -> Vec<ComposeService> {
    let services = config["services"].as_object().expect("docker-compose.yml has services");
    let images: BTreeSet<&str> =
        services.values().filter(|s| s.get("build").is_some()).filter_map(|s| s["image"].as_str()).collect();
    let (entrypoint, cmd) = image_defaults();
    let mut out = Vec::new();
    for (name, spec) in services {
        let built = spec.get("build").is_some() || spec["image"].as_str().is_some_and(|i| images.contains(i));
        if !built {
            continue;
        }
        let origin = format!("docker-compose.yml service `{name}`");
        let argv = match (spec.get("entrypoint"), spec.get("command")) {
            (Some(e), Some(c)) => [argv_field(e, &origin), argv_field(c, &origin)].concat(),
            (Some(e), None) => argv_field(e, &origin),
            (None, Some(c)) => [entrypoint.clone(), argv_field(c, &origin)].concat(),
            (None, None) => [entrypoint.clone(), cmd.clone()].concat(),
        };
        out.push(ComposeService { name: name.clone(), spec: spec.clone(), lines: buildstats_lines(&argv, &origin) });
    }
    assert!(!out.is_empty(), "docker-compose.yml has no service built from the Dockerfile (`build: .`)");
    out
}

/// The container port of a compose `ports` entry ("127.0.0.1:8080:8080/tcp", "8080", or the
/// long form with `target`).
fn compose_container_port(entry: &Value) -> String {
    match entry {
        Value::Object(o) => o["target"].to_string().trim_matches('"').to_string(),
        Value::String(s) => s.split('/').next().unwrap().rsplit(':').next().unwrap().to_string(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

struct K8sContainer {
    origin: String,
    kind: String,
    namespace: String,
    pod_labels: BTreeMap<String, String>,
    spec: Value,
    lines: Vec<Vec<String>>,
}

fn namespace(doc: &Value) -> String {
    doc["metadata"]["namespace"].as_str().unwrap_or("").to_string()
}

/// Every container running the buildstats image in the workloads of `docs`.
fn k8s_buildstats_containers(docs: &[Value], source: &str) -> Vec<K8sContainer> {
    let (entrypoint, cmd) = image_defaults();
    let mut out = Vec::new();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or("").to_string();
        let template = match kind.as_str() {
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet" => &doc["spec"]["template"],
            "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"],
            "Pod" => doc,
            _ => continue,
        };
        let pod_labels: BTreeMap<String, String> = template["metadata"]["labels"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
            .unwrap_or_default();
        for list in ["initContainers", "containers"] {
            for c in template["spec"][list].as_array().into_iter().flatten() {
                let image = c["image"].as_str().unwrap_or("");
                let repo_part = image.split('@').next().unwrap().rsplit('/').next().unwrap();
                if repo_part.split(':').next() != Some("buildstats") {
                    continue;
                }
                let origin = format!(
                    "{source}: {kind} {} container `{}`",
                    doc["metadata"]["name"].as_str().unwrap_or("?"),
                    c["name"].as_str().unwrap_or("?")
                );
                let list_of = |v: &Value| -> Option<Vec<String>> {
                    v.as_array().map(|a| a.iter().map(|x| x.as_str().unwrap_or("").to_string()).collect())
                };
                let argv = match (list_of(&c["command"]), list_of(&c["args"])) {
                    (Some(command), Some(args)) => [command, args].concat(),
                    (Some(command), None) => command,
                    (None, Some(args)) => [entrypoint.clone(), args].concat(),
                    (None, None) => [entrypoint.clone(), cmd.clone()].concat(),
                };
                let lines = buildstats_lines(&argv, &origin);
                out.push(K8sContainer {
                    origin,
                    kind: kind.clone(),
                    namespace: namespace(doc),
                    pod_labels: pod_labels.clone(),
                    spec: c.clone(),
                    lines,
                });
            }
        }
    }
    assert!(!out.is_empty(), "{source}: no workload runs the image `buildstats`");
    out
}

/// The container's environment as the binary would see it: the defaults, then `envFrom`
/// ConfigMaps (from the rendered output), then `env` values. Secrets are not known here.
fn k8s_env(c: &K8sContainer, docs: &[Value], defaults: &BTreeMap<String, String>) -> BTreeMap<String, Option<String>> {
    let mut env: BTreeMap<String, Option<String>> = defaults.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
    for from in c.spec["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or("");
        if let Some(name) = from["configMapRef"]["name"].as_str() {
            let map = docs
                .iter()
                .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name && namespace(d) == c.namespace)
                .unwrap_or_else(|| panic!("{}: envFrom names ConfigMap `{name}`, which the kustomization does not make", c.origin));
            for (k, v) in map["data"].as_object().into_iter().flatten() {
                env.insert(format!("{prefix}{k}"), v.as_str().map(String::from));
            }
        }
    }
    for e in c.spec["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("").to_string();
        env.insert(name, e["value"].as_str().map(String::from));
    }
    env
}

/// The port of a listen address that other pods / containers can reach.
fn listen_port(listen: &str, origin: &str, var: &str, fix: &str) -> u16 {
    let (host, port) = listen
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{origin}: {var}={listen} is not HOST:PORT"));
    let host = host.trim_matches(['[', ']']);
    if matches!(host, "127.0.0.1" | "localhost" | "::1") {
        panic!("{origin}: {var}={listen} listens on loopback, which probes and other containers cannot reach: {fix}");
    }
    port.parse().unwrap_or_else(|_| panic!("{origin}: {var}={listen}: bad port"))
}

/// A probe's or Service's port (number or container port name) as a number.
fn resolve_port(port: &Value, c: &K8sContainer) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().map(|n| n as u16),
        Value::String(name) => name.parse().ok().or_else(|| {
            c.spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_u64())
                .map(|n| n as u16)
        }),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Tests: the files are valid for their tools

#[test]
fn compose_file_passes_docker_compose_config() {
    let out = compose(&["config", "-q"]);
    assert!(
        out.status.success(),
        "`docker-compose -f docker-compose.yml config -q` (docker-compose 1.29.2, BUILDSTATS_AUTH_KEYS set) refuses the \
         file: {}\nFix docker-compose.yml where the message points",
        shown(&out)
    );
}

#[test]
fn kustomizations_render_and_pass_kubernetes_validate() {
    let validate = venv_bin("kubernetes-validate");
    for dir in KUSTOMIZATIONS {
        let yaml = kustomize(dir);
        let docs = yaml_docs(&yaml, dir);
        assert!(docs.len() > 5, "`kubectl kustomize {dir}` rendered only {} objects", docs.len());
        let file = scratch(&format!("{}.yaml", dir.replace('/', "-")));
        std::fs::write(&file, &yaml).unwrap();
        let mut cmd = Command::new(&validate);
        cmd.args(["--strict", "--quiet", "-k", K8S_SCHEMA_VERSION]).arg(&file);
        let out = run(cmd, None);
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "the objects of `kubectl kustomize {dir}` do not pass `kubernetes-validate --strict -k {K8S_SCHEMA_VERSION}`: {}\n\
             Fix the manifests in {dir} (or its base) where the message points",
            shown(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests: the files agree with the binary

/// The premise of `cli_verdict`, by experiment on this binary: wrong command lines are
/// refused even with `--help` appended, and what `--help` lets through (a missing required
/// argument) the second check catches.
#[test]
fn a_bad_command_line_is_refused() {
    for bad in [
        vec!["gatewy"],
        vec!["sink", "dynamodb", "--grop", "g"],
        vec!["sink", "mysql"],
        vec!["retention", "run", "--onse"],
        vec!["retention", "runn"],
        vec!["query", "extra"],
        vec!["--confg", "x.toml", "gateway"],
    ] {
        let mut with_help = strings(&bad);
        with_help.push("--help".into());
        let out = buildstats(&with_help, &[]);
        assert!(!out.status.success(), "`buildstats {}` should be a usage error: {}", with_help.join(" "), shown(&out));
        assert!(cli_verdict(&strings(&bad)).is_err(), "`buildstats {}` should be refused", bad.join(" "));
    }
    // `--help` wins over a missing required argument; the config check does not.
    let out = buildstats(&strings(&["dlq", "redrive", "--help"]), &[]);
    assert!(out.status.success(), "`dlq redrive --help` prints help: {}", shown(&out));
    let verdict = cli_verdict(&strings(&["dlq", "redrive"]));
    assert!(verdict.as_ref().is_err_and(|e| e.contains("--sink")), "`dlq redrive` without --sink is refused: {verdict:?}");
    for good in [
        vec!["gateway"],
        vec!["sink", "s3", "--group", "backfill"],
        vec!["retention", "run", "--once"],
        vec!["dlq", "redrive", "--sink", "s3"],
        vec!["--config", "/etc/buildstats.toml", "query"],
    ] {
        let verdict = cli_verdict(&strings(&good));
        assert!(verdict.is_ok(), "`buildstats {}` is accepted: {verdict:?}", good.join(" "));
    }
}

#[test]
fn command_lines_are_accepted_by_the_binary() {
    let mut checked = 0;
    for service in compose_buildstats_services(&compose_config()) {
        for line in &service.lines {
            assert_cli_accepts(line, &format!("docker-compose.yml service `{}`", service.name));
            checked += 1;
        }
    }
    for dir in KUSTOMIZATIONS {
        for c in k8s_buildstats_containers(&rendered(dir), dir) {
            for line in &c.lines {
                assert_cli_accepts(line, &c.origin);
                checked += 1;
            }
        }
    }
    let (entrypoint, cmd) = image_defaults();
    for line in buildstats_lines(&[entrypoint, cmd].concat(), "Dockerfile ENTRYPOINT + CMD") {
        assert_cli_accepts(&line, "Dockerfile ENTRYPOINT + CMD");
        checked += 1;
    }
    assert!(checked > 10, "only {checked} command lines found");
}

#[test]
fn k8s_probes_and_ports_match_the_listen_addresses() {
    let defaults = known_env();
    for dir in KUSTOMIZATIONS {
        let docs = rendered(dir);
        let services: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Service").collect();
        for c in k8s_buildstats_containers(&docs, dir) {
            let roles: Vec<String> = c.lines.iter().filter_map(|l| role(l)).collect();
            if c.kind == "Deployment" {
                assert!(
                    roles.len() == 1,
                    "{}: a Deployment should run one server role ({}), it runs {:?}; one-shot commands belong in a Job",
                    c.origin,
                    ROLES.join(", "),
                    c.lines
                );
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(path) = c.spec[probe]["httpGet"]["path"].as_str() {
                    assert!(
                        path == "/healthz" || path == "/readyz",
                        "{}: {probe} path {path}: every role serves /healthz and /readyz only",
                        c.origin
                    );
                }
            }
            let Some(role) = roles.first() else { continue };
            let var = listen_var(role);
            let env = k8s_env(&c, &docs, &defaults);
            let listen = env
                .get(var)
                .cloned()
                .flatten()
                .unwrap_or_else(|| panic!("{}: {var} comes from a valueFrom the test cannot follow: set it in the ConfigMap", c.origin));
            let fix = format!("set {var}=0.0.0.0:PORT in the ConfigMap buildstats-config (k8s/base/configmap.yaml)");
            let port = listen_port(&listen, &c.origin, var, &fix);
            let declared: Vec<u64> =
                c.spec["ports"].as_array().into_iter().flatten().filter_map(|p| p["containerPort"].as_u64()).collect();
            assert!(
                declared.contains(&u64::from(port)),
                "{}: `{role}` listens on {listen} ({var}) but the container declares ports {declared:?}: make containerPort {port}",
                c.origin
            );
            for (probe, want) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "")] {
                let p = &c.spec[probe];
                if p.is_null() {
                    assert!(want.is_empty(), "{}: no {probe}: add an httpGet {probe} on {want}, port {port}", c.origin);
                    continue;
                }
                let get = &p["httpGet"];
                assert!(get.is_object(), "{}: {probe} should be an httpGet of {} on port {port}", c.origin, if want.is_empty() { "/healthz" } else { want });
                if !want.is_empty() {
                    assert_eq!(
                        get["path"].as_str(),
                        Some(want),
                        "{}: {probe} path should be {want} (liveness: /healthz, the process is up; readiness: /readyz, its dependencies answer)",
                        c.origin
                    );
                }
                assert_eq!(
                    resolve_port(&get["port"], &c),
                    Some(port),
                    "{}: {probe} port {} is not {port}, where `{role}` listens ({var}={listen})",
                    c.origin,
                    get["port"]
                );
            }
            let mut fronted = 0;
            for svc in &services {
                let Some(selector) = svc["spec"]["selector"].as_object() else { continue };
                let selects = !selector.is_empty()
                    && namespace(svc) == c.namespace
                    && selector.iter().all(|(k, v)| c.pod_labels.get(k).map(String::as_str) == v.as_str());
                if !selects {
                    continue;
                }
                fronted += 1;
                for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
                    let target = if p["targetPort"].is_null() { &p["port"] } else { &p["targetPort"] };
                    assert_eq!(
                        resolve_port(target, &c),
                        Some(port),
                        "{dir}: Service {} targetPort {target} does not reach {}: `{role}` listens on {port} ({var}={listen})",
                        svc["metadata"]["name"],
                        c.origin
                    );
                }
            }
            if role == "gateway" || role == "query" {
                assert!(fronted > 0, "{}: no Service selects the `{role}` pods: add one with targetPort {port}", c.origin);
            }
        }
    }
}

#[test]
fn compose_ports_and_healthchecks_match_the_listen_addresses() {
    let defaults = known_env();
    for service in compose_buildstats_services(&compose_config()) {
        let origin = format!("docker-compose.yml service `{}`", service.name);
        let roles: Vec<String> = service.lines.iter().filter_map(|l| role(l)).collect();
        let Some(role) = roles.first() else { continue };
        assert_eq!(roles.len(), 1, "{origin}: one server role per service, not {roles:?}");
        let var = listen_var(role);
        let env = &service.spec["environment"];
        let listen = match env.get(var) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => panic!("{origin}: {var} is {other}: give it a value (0.0.0.0:PORT) in the x-buildstats environment"),
            None => defaults[var].clone(),
        };
        let fix = format!("set {var}: 0.0.0.0:PORT in the x-buildstats environment of docker-compose.yml");
        let port = listen_port(&listen, &origin, var, &fix);
        let published: Vec<String> =
            service.spec["ports"].as_array().into_iter().flatten().map(compose_container_port).collect();
        for target in &published {
            assert_eq!(
                target,
                &port.to_string(),
                "{origin}: publishes container port {target}, but `{role}` listens on {listen} ({var}): publish \"127.0.0.1:{port}:{port}\""
            );
        }
        if role == "gateway" || role == "query" {
            assert!(!published.is_empty(), "{origin}: `{role}` publishes no port: add ports: [\"127.0.0.1:{port}:{port}\"]");
        }
        let health = &service.spec["healthcheck"];
        if health.is_object() && health["disable"] != Value::Bool(true) {
            let test = match &health["test"] {
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
                other => other.as_str().unwrap_or("").to_string(),
            };
            assert!(
                (test.contains("/healthz") || test.contains("/readyz")) && test.contains(&format!(":{port}/")),
                "{origin}: the healthcheck `{test}` should ask /healthz or /readyz on port {port} ({var}={listen})"
            );
        }
    }
}

#[test]
fn environment_variable_names_are_known_to_the_binary() {
    let known = known_env();
    let mut files = vec![repo().join("docker-compose.yml"), repo().join("Dockerfile")];
    let mut dirs = vec![repo().join("k8s")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let mut unknown = BTreeSet::new();
    let mut seen = 0;
    // Every name in the text (values, keys and comments alike) ...
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for piece in text.split("BUILDSTATS_").skip(1) {
            let rest: String = piece.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
            let rest = rest.trim_end_matches('_');
            if rest.is_empty() {
                continue; // BUILDSTATS_* or BUILDSTATS_<SECTION>_<KEY>
            }
            seen += 1;
            let name = format!("BUILDSTATS_{rest}");
            if !known.contains_key(&name) {
                unknown.insert(format!("{name} (in {})", file.strip_prefix(repo()).unwrap().display()));
            }
        }
    }
    // ... and every name the tools produce (compose's merged environment, rendered k8s objects).
    let mut produced: Vec<(String, String)> = Vec::new();
    for service in compose_config()["services"].as_object().unwrap().iter() {
        for name in service.1["environment"].as_object().into_iter().flatten().map(|e| e.0) {
            produced.push((name.clone(), format!("docker-compose config, service {}", service.0)));
        }
    }
    for dir in KUSTOMIZATIONS {
        let docs = rendered(dir);
        for d in docs.iter().filter(|d| d["kind"] == "ConfigMap" || d["kind"] == "Secret") {
            for key in ["data", "stringData"] {
                for name in d[key].as_object().into_iter().flatten().map(|e| e.0) {
                    produced.push((name.clone(), format!("{dir}: {} {}", d["kind"], d["metadata"]["name"])));
                }
            }
        }
        for c in k8s_buildstats_containers(&docs, dir) {
            for e in c.spec["env"].as_array().into_iter().flatten() {
                produced.push((e["name"].as_str().unwrap_or("").to_string(), c.origin.clone()));
            }
        }
    }
    for (name, origin) in produced {
        if name.starts_with("BUILDSTATS_") {
            seen += 1;
            if !known.contains_key(&name) {
                unknown.insert(format!("{name} (in {origin})"));
            }
        }
    }
    assert!(seen > 20, "only {seen} BUILDSTATS_* names found");
    assert!(
        unknown.is_empty(),
        "variables the binary does not know (it ignores them silently): {unknown:#?}\n\
         `buildstats config env` lists every one it reads; fix the names"
    );
}

#[test]
fn every_role_has_a_compose_service_and_a_deployment() {
    let compose_roles: BTreeSet<String> = compose_buildstats_services(&compose_config())
        .iter()
        .flat_map(|s| s.lines.iter().filter_map(|l| role(l)))
        .collect();
    for want in ROLES {
        assert!(
            compose_roles.contains(want),
            "docker-compose.yml has no service running `buildstats {want}` (it runs {compose_roles:?}): add one like the others"
        );
    }
    for dir in KUSTOMIZATIONS {
        let deployed: BTreeSet<String> = k8s_buildstats_containers(&rendered(dir), dir)
            .iter()
            .filter(|c| c.kind == "Deployment")
            .flat_map(|c| c.lines.iter().filter_map(|l| role(l)))
            .collect();
        for want in ROLES {
            assert!(
                deployed.contains(want),
                "{dir}: no Deployment runs `buildstats {want}` (Deployments run {deployed:?}): add one to k8s/base"
            );
        }
    }
}

#[test]
fn dockerfile_copies_every_crate_and_runs_the_binary() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let manifest: toml::Value = toml::from_str(&std::fs::read_to_string(repo().join("Cargo.toml")).unwrap()).unwrap();
    let members: Vec<&str> = manifest["workspace"]["members"].as_array().unwrap().iter().filter_map(|m| m.as_str()).collect();
    let copies: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("COPY "))
        .filter(|rest| !rest.starts_with("--"))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").trim_end_matches('/').to_string())
        .collect();
    if !copies.contains(".") {
        for m in &members {
            assert!(
                copies.contains(*m),
                "the Dockerfile does not copy workspace member `{m}` (Cargo.toml), so `cargo build` in the image fails: \
                 add `COPY {m} {m}` beside the others"
            );
        }
        for f in ["Cargo.toml", "Cargo.lock"] {
            assert!(text.lines().any(|l| l.starts_with("COPY ") && l.contains(f)), "the Dockerfile does not copy {f}");
        }
    }
    let (entrypoint, _) = image_defaults();
    assert!(
        entrypoint.len() == 1 && is_buildstats(&entrypoint[0]),
        "the image's ENTRYPOINT is {entrypoint:?}; compose and k8s pass only the subcommand, so it must be [\"buildstats\"]"
    );
    // The build image's Rust is at least the workspace's rust-version.
    let wanted = manifest["workspace"]["package"]["rust-version"].as_str().unwrap_or("0");
    let rust = text
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .and_then(|t| t.split(['-', ' ']).next())
        .unwrap_or_else(|| panic!("the Dockerfile builds FROM rust:VERSION"));
    let version = |v: &str| v.split('.').map(|p| p.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
    assert!(version(rust) >= version(wanted), "the Dockerfile builds with rust:{rust}, older than rust-version {wanted}");
}
