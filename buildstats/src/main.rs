//! `buildstats`: one binary, every role a subcommand (run one role per process in a cluster,
//! or `all` on one machine).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use buildstats_core::auth::Authenticator;
use buildstats_core::config::{env_variables, Config};
use buildstats_core::tenancy::Slug;
use buildstats_core::tokens::Scope;
use buildstats_core::{db, kafka, telemetry};
use clap::{Parser, Subcommand, ValueEnum};
use processors::sinks::SinkName;
use processors::SinkRun;

#[derive(Parser)]
#[command(name = "buildstats", version, about = "Self-hosted build statistics for Pants")]
struct Cli {
    /// Config file (TOML). BUILDSTATS_* environment variables override it.
    #[arg(long, global = true, env = "BUILDSTATS_CONFIG", default_value = "buildstats.toml")]
    config: PathBuf,
    /// Extra KEY=VALUE variables, read when the file exists (what `dev/services up` writes).
    /// Variables already set in the environment win.
    #[arg(long, global = true, env = "BUILDSTATS_ENV_FILE", default_value = "target/dev/services.env")]
    env_file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ingest HTTP API (the Pants plugin's endpoints).
    Gateway,
    /// Serve the query API (builds, search, workunits, artifacts, indicators) on
    /// `query.listen`.
    Query,
    /// Every role in one process (gateway, every sink, query API, retention worker), after
    /// creating the database, topics and stores: the local run.
    All,
    /// Run one sink: consume the builds topic in the sink's own consumer group and write its
    /// store. Run any number of replicas (up to the partition count) to scale out.
    Sink {
        /// dynamodb, s3, opensearch or influxdb.
        #[arg(value_parser = parse_sink)]
        name: SinkName,
        /// Consumer group (default `{sinks.group_prefix}-NAME`). A new group starts from the
        /// oldest record the topic holds.
        #[arg(long)]
        group: Option<String>,
    },
    /// Move a sink's consumer group (its processes stopped) back to the oldest record the
    /// topic holds or to a time, so the sink rebuilds a wiped or new store from the topic.
    Replay {
        /// dynamodb, s3, opensearch or influxdb.
        #[arg(long, value_parser = parse_sink)]
        sink: SinkName,
        /// `earliest`, or a time: RFC 3339 (`2026-12-01T00:00:00Z`), a date (`2026-12-01`,
        /// midnight UTC) or epoch milliseconds.
        #[arg(long, value_parser = processors::replay::parse_from)]
        from: processors::replay::ReplayFrom,
        /// The group to move (default `{sinks.group_prefix}-NAME`). A new group name starts a
        /// fresh group there; run the sink with the same `--group`.
        #[arg(long)]
        group: Option<String>,
    },
    /// Rebuild a store (dynamodb, opensearch, influxdb) from the S3 archive, for builds the
    /// topic no longer holds. Skips deleted builds and builds past their retention policy.
    /// Idempotent: builds the store holds stay as they are.
    Reindex {
        /// dynamodb, opensearch or influxdb (the S3 store is the source; rebuild it with `replay`).
        #[arg(long, value_parser = parse_sink)]
        sink: SinkName,
        /// Only this org's builds.
        #[arg(long)]
        org: Option<String>,
        /// Only this repo's builds (with --org).
        #[arg(long, requires = "org")]
        repo: Option<String>,
        /// Only builds that started at or after this time: RFC 3339, a date (midnight UTC) or
        /// epoch milliseconds.
        #[arg(long, value_parser = processors::reindex::parse_since)]
        since: Option<i64>,
        /// Read the archive and say what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The dead-letter topic.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Per-repo retention policies, and the worker that applies them.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Set-up and tenancy administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Send the records a sink dead-lettered back to the builds topic, for that sink only,
    /// once their cause is fixed. Resumable: what was sent back is not sent again.
    Redrive {
        #[arg(long, value_parser = parse_sink)]
        sink: SinkName,
    },
}

fn parse_sink(name: &str) -> Result<SinkName, String> {
    SinkName::parse(name)
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create the database if missing and apply the Postgres migrations (idempotent).
    Migrate,
    /// Migrations, then the Kafka topics (idempotent).
    Init,
    /// Create the sinks' stores: the DynamoDB table, the S3 bucket, the OpenSearch index and
    /// alias, the InfluxDB database (idempotent).
    InitStores,
    /// Long-lived tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Topic versions.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Copy every record of the builds topic (`kafka.topic`) to a new topic version with more
    /// partitions, each build's records in order; then switch the roles with
    /// `BUILDSTATS_KAFKA_TOPIC`. Resumable: a rerun copies only what is left.
    Migrate {
        /// The new topic (e.g. buildstats.builds.v2); created when missing.
        #[arg(long)]
        to: String,
        /// Partitions of the new topic.
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=10000))]
        partitions: i32,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ScopeArg {
    Ingest,
    Read,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create the org/repo if missing and print a long-lived token as the last stdout line.
    Create {
        #[arg(long)]
        org: String,
        #[arg(long)]
        repo: String,
        /// `ingest` may write builds; `read` may only read.
        #[arg(long, value_enum, default_value = "ingest")]
        scope: ScopeArg,
        /// A CI token: may attribute CI builds to the CI user (impersonation).
        #[arg(long)]
        ci: bool,
        /// Who or what the token is for (shown by the plugin as the token's user).
        #[arg(long, default_value = "")]
        description: String,
        /// Lifetime in days (default: auth.refresh_token_days).
        #[arg(long)]
        ttl_days: Option<i64>,
    },
    /// Revoke a token (and every access token issued from it) within seconds.
    Revoke {
        #[arg(long)]
        jid: uuid::Uuid,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Create or replace a repo's policy: builds older than DAYS are deleted from every store,
    /// checked every PERIOD minutes. A dry run (the default) only counts what would go.
    Set {
        #[arg(long)]
        org: String,
        #[arg(long)]
        repo: String,
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=36500))]
        days: i32,
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=525600))]
        period: i32,
        /// Really delete (publish tombstones); without it the policy is a dry run.
        #[arg(long)]
        no_dry_run: bool,
    },
    /// Show every policy, or one repo's.
    Show {
        #[arg(long, requires = "repo")]
        org: Option<String>,
        #[arg(long, requires = "org")]
        repo: Option<String>,
    },
    /// Remove a repo's policy (its builds are then kept forever).
    Unset {
        #[arg(long)]
        org: String,
        #[arg(long)]
        repo: String,
    },
    /// The worker: every tick, a pass of each due policy (replicas share the policies).
    Run {
        /// One tick, then exit with a summary.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// List every BUILDSTATS_* variable with its default.
    Env,
    /// Print the effective configuration (secrets hidden).
    Show,
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let explicit = std::env::var_os("BUILDSTATS_CONFIG").is_some() || cli.config != PathBuf::from("buildstats.toml");
    let config = Config::from_env_and_file(&cli.config, explicit, Some(&cli.env_file))?;
    Ok(config)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli)?;
    telemetry::init_logging(&config.log);
    match cli.command {
        Command::Gateway => gateway(config).await,
        Command::Query => query_until(&config, telemetry::shutdown_signal()).await,
        Command::All => {
            init(&config).await?;
            processors::init::init_stores(&config).await?;
            let runs = SinkName::ALL
                .into_iter()
                .map(|name| SinkRun { name, group: name.default_group(&config.sinks.group_prefix) })
                .collect();
            let sinks_config = config.clone();
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let mut sinks_stop = stop_rx.clone();
            let sinks = tokio::spawn(async move {
                processors::run_sinks(&sinks_config, runs, async move {
                    let _ = sinks_stop.wait_for(|s| *s).await;
                })
                .await
            });
            let retention_config = config.clone();
            let mut retention_stop = stop_rx.clone();
            let retention = tokio::spawn(async move {
                processors::retention::run(&retention_config, false, async move {
                    let _ = retention_stop.wait_for(|s| *s).await;
                })
                .await
            });
            let query_config = config.clone();
            let mut query_stop = stop_rx.clone();
            let query = tokio::spawn(async move {
                query_until(&query_config, async move {
                    let _ = query_stop.wait_for(|s| *s).await;
                })
                .await
            });
            let served = gateway_until(config, async move {
                telemetry::shutdown_signal().await;
                let _ = stop_tx.send(true);
            })
            .await;
            let sunk = sinks.await.context("sinks task failed")?;
            let queried = query.await.context("query API task failed")?;
            let retained = retention.await.context("retention task failed")?;
            served?;
            queried?;
            retained?;
            sunk
        }
        Command::Sink { name, group } => {
            let group = group.unwrap_or_else(|| name.default_group(&config.sinks.group_prefix));
            processors::run_sinks(&config, vec![SinkRun { name, group }], telemetry::shutdown_signal()).await
        }
        Command::Replay { sink, from, group } => {
            let group = group.unwrap_or_else(|| sink.default_group(&config.sinks.group_prefix));
            processors::replay::replay(&config, sink, &group, from).await.map(|_| ())
        }
        Command::Reindex { sink, org, repo, since, dry_run } => {
            let scope = processors::reindex::ReindexScope {
                org: org.map(|o| Slug::parse("org", &o)).transpose()?,
                repo: repo.map(|r| Slug::parse("repo", &r)).transpose()?,
                since_ms: since,
                dry_run,
            };
            let summary = processors::reindex::reindex(&config, sink, scope).await?;
            if !summary.refused.is_empty() {
                bail!("{} archived events could not be written (listed above); the rest is in the store", summary.refused.len());
            }
            Ok(())
        }
        Command::Dlq { command: DlqCommand::Redrive { sink } } => {
            processors::redrive::redrive(&config, sink).await.map(|_| ())
        }
        Command::Admin { command } => admin(config, command).await,
        Command::Retention { command } => retention(config, command).await,
        Command::Config { command: ConfigCommand::Env } => {
            for var in env_variables() {
                println!("{}={}", var.name, var.default);
            }
            Ok(())
        }
        Command::Config { command: ConfigCommand::Show } => {
            let mut shown = config.clone();
            if !shown.auth.keys.is_empty() {
                shown.auth.keys = shown
                    .auth
                    .keys
                    .split(',')
                    .map(|k| format!("{}:***", k.split(':').next().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",");
            }
            print!("{}", toml::to_string(&shown)?);
            Ok(())
        }
    }
}

async fn gateway(config: Config) -> anyhow::Result<()> {
    gateway_until(config, telemetry::shutdown_signal()).await
}

async fn gateway_until(config: Config, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    telemetry::metrics_handle();
    let state = ingest_gateway::prepare(&config).await?;
    let listener = tokio::net::TcpListener::bind(&config.gateway.listen)
        .await
        .with_context(|| format!("cannot listen on {} (gateway.listen)", config.gateway.listen))?;
    ingest_gateway::serve(
        state,
        listener,
        Duration::from_secs(config.gateway.shutdown_grace_seconds),
        shutdown,
    )
    .await
}

async fn query_until(config: &Config, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let state = query_api::prepare(config).await?;
    let listener = tokio::net::TcpListener::bind(&config.query.listen)
        .await
        .with_context(|| format!("cannot listen on {} (query.listen)", config.query.listen))?;
    query_api::serve(state, listener, shutdown).await
}

fn show_policy(p: &buildstats_core::retention::Policy) -> String {
    let last = match (p.last_run_at, p.last_run_builds, p.last_run_dry) {
        (Some(at), Some(n), Some(dry)) => format!("last pass {} ({n} builds{})", at.format("%Y-%m-%d %H:%M:%S UTC"), if dry { ", dry run" } else { " tombstoned" }),
        _ => "no pass yet".into(),
    };
    format!(
        "{}/{}: keep {} days, check every {} min, {}; {last}",
        p.org,
        p.repo,
        p.retention_days,
        p.period_minutes,
        if p.dry_run { "DRY RUN (nothing is deleted; --no-dry-run to delete)" } else { "deleting" }
    )
}

async fn retention(config: Config, command: RetentionCommand) -> anyhow::Result<()> {
    use buildstats_core::retention as policies;
    if let RetentionCommand::Run { once } = command {
        let passes = processors::retention::run(&config, once, telemetry::shutdown_signal()).await?;
        if once {
            let builds: usize = passes.iter().map(|p| p.builds).sum();
            for p in &passes {
                let verb = if p.dry_run { "would delete (dry run)" } else { "tombstoned" };
                eprintln!("{}/{}: {verb} {} builds older than {}{}", p.org, p.repo, p.builds, chrono_ms(p.cutoff_ms), if p.more { " (more left for the next pass)" } else { "" });
            }
            eprintln!("retention: {} policies due, {builds} builds", passes.len());
        }
        return Ok(());
    }
    let pool = db::connect(&config.postgres).await?;
    db::check_migrated(&pool).await?;
    match command {
        RetentionCommand::Set { org, repo, days, period, no_dry_run } => {
            let (org, repo) = (Slug::parse("org", &org)?, Slug::parse("repo", &repo)?);
            let p = policies::set(&pool, &org, &repo, days, period, !no_dry_run).await?;
            println!("{}", show_policy(&p));
        }
        RetentionCommand::Show { org, repo } => {
            let shown = match (org, repo) {
                (Some(o), Some(r)) => policies::show(&pool, Some((&Slug::parse("org", &o)?, &Slug::parse("repo", &r)?))).await?,
                _ => policies::show(&pool, None).await?,
            };
            if shown.is_empty() {
                println!("no retention policies: every build is kept");
            }
            for p in shown {
                println!("{}", show_policy(&p));
            }
        }
        RetentionCommand::Unset { org, repo } => {
            let (org, repo) = (Slug::parse("org", &org)?, Slug::parse("repo", &repo)?);
            if policies::unset(&pool, &org, &repo).await? {
                println!("{org}/{repo}: policy removed; its builds are kept");
            } else {
                bail!("{org}/{repo} has no retention policy (`buildstats retention show` lists them)");
            }
        }
        RetentionCommand::Run { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn chrono_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| ms.to_string())
}

async fn init(config: &Config) -> anyhow::Result<()> {
    eprintln!("[1/2] Postgres migrations ({})", config.postgres.url.split('@').last().unwrap_or(""));
    let applied = db::migrate(&config.postgres).await?;
    eprintln!("      {applied} newly applied");
    eprintln!("[2/2] Kafka topics on {}", config.kafka.brokers);
    let created = kafka::ensure_topics(&config.kafka).await?;
    if created.is_empty() {
        eprintln!("      {} and {} already exist", config.kafka.topic, config.kafka.dead_letter_topic);
    } else {
        eprintln!("      created {}", created.join(", "));
    }
    eprintln!("init done: {} partitions, retention {} days", config.kafka.partitions, config.kafka.retention_days);
    Ok(())
}

async fn admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Migrate => {
            let applied = db::migrate(&config.postgres).await?;
            println!("migrations up to date ({applied} newly applied)");
            Ok(())
        }
        AdminCommand::Init => init(&config).await,
        AdminCommand::InitStores => processors::init::init_stores(&config).await,
        AdminCommand::Topic { command: TopicCommand::Migrate { to, partitions } } => {
            processors::topic_migrate::migrate(&config, &to, partitions).await.map(|_| ())
        }
        AdminCommand::Token { command } => {
            let pool = db::connect(&config.postgres).await?;
            db::check_migrated(&pool).await?;
            let auth = Authenticator::new(&config.auth, pool.clone())?;
            match command {
                TokenCommand::Create { org, repo, scope, ci, description, ttl_days } => {
                    let org = Slug::parse("org", &org)?;
                    let repo = Slug::parse("repo", &repo)?;
                    if ttl_days.is_some_and(|d| d < 1) {
                        bail!("--ttl-days must be at least 1");
                    }
                    let scope = match scope {
                        ScopeArg::Ingest => Scope::Ingest,
                        ScopeArg::Read => Scope::Read,
                    };
                    let created = auth.create_token(&org, &repo, scope, ci, &description, ttl_days).await?;
                    println!("# token for {org}/{repo}, scope {}, ci {ci}", scope.as_str());
                    println!("# jid {} (revoke with `buildstats admin token revoke --jid {}`)", created.jid, created.jid);
                    println!("# expires {}", created.expires_at.to_rfc3339());
                    println!("{}", created.token);
                    Ok(())
                }
                TokenCommand::Revoke { jid } => {
                    if !db::revoke_token(&pool, jid).await? {
                        bail!("no token with jid {jid}");
                    }
                    println!(
                        "revoked {jid}: it and its access tokens stop working within {} s",
                        config.auth.revocation_check_seconds
                    );
                    Ok(())
                }
            }
        }
    }
}
