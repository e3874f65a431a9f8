//! `switchboard`: the one binary. `up` runs everything in one process on the embedded default
//! (SQLite, in-memory state, local recordings); `api` runs an api replica; `migrate` runs the
//! schema migrations; `admin` holds operator commands.

mod config;
mod demo;
mod gateway_admin;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_api::AppState;
use switchboard_api::auth::TokenService;
use switchboard_db::Database;
use tracing_subscriber::EnvFilter;

use crate::config::{CONFIG_HELP, Config, FlagOverrides, LogFormat};

/// mimalloc: fewer cycles per allocation than glibc's malloc on the request path (measured with
/// `scripts/bench api`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "switchboard",
    version,
    about = "Hosted multi-tenant contact center"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every server command takes.
#[derive(clap::Args, Debug)]
#[command(after_help = CONFIG_HELP)]
struct Common {
    /// TOML configuration file (keys below).
    #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on for HTTP [default: 127.0.0.1:8080; env SWITCHBOARD_HTTP_ADDR].
    #[arg(long)]
    http_addr: Option<String>,
    /// Directory for the SQLite database, recordings and generated keys [default: ./data; env
    /// SWITCHBOARD_DATA_DIR].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl Common {
    fn load(&self) -> anyhow::Result<Config> {
        Config::load(
            self.config.as_deref(),
            &FlagOverrides {
                http_addr: self.http_addr.clone(),
                data_dir: self.data_dir.clone(),
            },
        )
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run api and media gateway in one process on the embedded default: SQLite in the data
    /// directory, in-memory state, recordings on local disk. Migrates first.
    Up {
        #[command(flatten)]
        common: Common,
        /// Seed a demo tenant (admin, two agents, a queue, a number) and print how to log in.
        #[arg(long)]
        demo: bool,
    },
    /// Run one stateless api replica (expects a migrated database).
    Api {
        #[command(flatten)]
        common: Common,
        /// Run pending migrations before serving.
        #[arg(long)]
        migrate: bool,
    },
    /// Run one media gateway node (SIP, RTP; expects a migrated database and, with more than
    /// one node or an api elsewhere, a shared Redis in state.redis_url).
    Gateway {
        #[command(flatten)]
        common: Common,
    },
    /// Run pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Administrative commands.
    Admin {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Create (or find) a platform operator, who logs in to tenant `platform`.
    CreateOperator {
        #[arg(long)]
        email: String,
        /// The password (10 to 128 characters).
        #[arg(long, env = "SWITCHBOARD_OPERATOR_PASSWORD", hide_env_values = true)]
        password: String,
    },
}

fn init_tracing(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rsipstack=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn open_database(cfg: &Config) -> anyhow::Result<Database> {
    let url = cfg.database_url()?;
    Database::connect(&url, &cfg.pool())
        .await
        .context("connecting to the database")
}

async fn app_state(cfg: &Config, db: Database, tokens: TokenService) -> anyhow::Result<AppState> {
    Ok(AppState::new(
        db,
        tokens,
        cfg.http_settings(),
        cfg.state_engine().await?,
        cfg.state.presence_ttl_ms,
    ))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: draining in-flight requests");
}

async fn start_gateway(
    cfg: &Config,
    state: &AppState,
) -> anyhow::Result<switchboard_gateway::RunningGateway> {
    let mut gateway_cfg = cfg.gateway.clone();
    if gateway_cfg.journal_dir.is_none() {
        gateway_cfg.journal_dir = Some(cfg.data_dir.join("calls"));
    }
    let gateway = switchboard_gateway::start_with_tokens(
        gateway_cfg,
        state.db.clone(),
        state.engine.clone(),
        Some(agent_tokens(state.clone())),
    )
    .await
    .context("starting the media gateway")?;
    println!("media gateway: SIP on {} (UDP and TCP)", gateway.sip_addr());
    if let Some(ws) = gateway.ws_addr() {
        let scheme = if cfg.gateway.ws.secure() { "wss" } else { "ws" };
        println!("media gateway: SIP over WebSocket on {scheme}://{ws}");
    }
    Ok(gateway)
}

/// The api's access-token rule ([`switchboard_api::extract::user_of_access_token`]) for
/// browser agents that register at the gateway with `Authorization: Bearer`.
fn agent_tokens(state: AppState) -> switchboard_gateway::token::AgentTokenVerifier {
    use switchboard_api::error::ApiError;
    use switchboard_gateway::token::{TokenIdentity, TokenRefusal};
    std::sync::Arc::new(move |token: String| {
        let state = state.clone();
        Box::pin(async move {
            match switchboard_api::extract::user_of_access_token(&state, &token).await {
                Ok((tenant, user, _)) => Ok(TokenIdentity {
                    tenant: tenant.0,
                    user: user.0,
                }),
                Err(ApiError::Unauthorized(reason)) => Err(TokenRefusal::Invalid(reason)),
                Err(ApiError::TenantSuspended) => Err(TokenRefusal::Forbidden("tenant suspended")),
                Err(ApiError::Forbidden(reason)) => Err(TokenRefusal::Forbidden(reason)),
                Err(e) => {
                    tracing::warn!(error = %e, "checking a SIP bearer token");
                    Err(TokenRefusal::Unavailable)
                }
            }
        })
    })
}

async fn serve(cfg: &Config, state: AppState) -> anyhow::Result<()> {
    tokio::spawn(switchboard_api::run_engine_ticker(
        state.clone(),
        std::time::Duration::from_millis(cfg.state.tick_ms),
    ));
    let addr = cfg.http_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    switchboard_api::serve(listener, state, shutdown_signal()).await?;
    Ok(())
}

impl Command {
    fn common(&self) -> &Common {
        match self {
            Command::Up { common, .. }
            | Command::Api { common, .. }
            | Command::Gateway { common }
            | Command::Migrate { common }
            | Command::Admin { common, .. } => common,
        }
    }
}

/// Loads the configuration, then runs the command on a runtime of `worker_threads` threads.
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = cli.command.common().load()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if cfg.worker_threads > 0 {
        runtime.worker_threads(cfg.worker_threads);
    }
    runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(cli.command, cfg))
}

async fn run(command: Command, mut cfg: Config) -> anyhow::Result<()> {
    match command {
        Command::Up { demo, .. } => {
            init_tracing(cfg.log_format);
            // The embedded default records calls to the local store unless turned off.
            cfg.gateway.recordings.enabled.get_or_insert(true);
            let tokens = TokenService::new(cfg.auth_settings(true)?)?;
            let db = open_database(&cfg).await?;
            db.migrate().await.context("migrating")?;
            let state = app_state(&cfg, db, tokens).await?;
            if demo {
                demo::seed(&state, &cfg).await?;
            }
            let gateway = start_gateway(&cfg, &state).await?;
            // The desktop is the phone when this process's gateway speaks SIP over WebSocket.
            if let (None, Some(ws)) = (&cfg.http.softphone_ws_url, gateway.ws_addr()) {
                let settings = cfg.local_softphone(ws).map_err(anyhow::Error::msg)?;
                println!("agent desktop: browser softphone via {}", settings.ws_url());
                state.set_softphone(settings);
            }
            if let Some(rec) = &gateway.gateway.recorder {
                state.set_recordings(switchboard_api::routes::recordings::RecordingsAccess::new(
                    rec.store.clone(),
                    std::time::Duration::from_secs(cfg.gateway.recordings.playback_ttl_s),
                ));
            }
            gateway
                .gateway
                .metrics
                .register_into(&state.metrics.registry)
                .context("adding the gateway's metrics to /metrics")?;
            let served = serve(&cfg, state).await;
            gateway.shutdown().await;
            served
        }
        Command::Api { migrate, .. } => {
            init_tracing(cfg.log_format);
            // Replicas must share a signing key; only a single SQLite node may generate one.
            let sqlite = cfg.database_url()?.starts_with("sqlite:");
            let tokens = TokenService::new(cfg.auth_settings(sqlite)?)?;
            let db = open_database(&cfg).await?;
            if migrate {
                db.migrate().await.context("migrating")?;
            }
            if cfg.state.redis_url.is_none() {
                tracing::warn!(
                    "state.redis_url is unset: agent state lives in this process only; \
                     set it when running more than one replica"
                );
            }
            let state = app_state(&cfg, db, tokens).await?;
            // Playback needs the store the gateways upload to (S3 when several processes).
            let rec = &cfg.gateway.recordings;
            if rec.is_enabled() {
                let store = rec.open_store().await.context("gateway.recordings")?;
                state.set_recordings(switchboard_api::routes::recordings::RecordingsAccess::new(
                    store,
                    std::time::Duration::from_secs(rec.playback_ttl_s),
                ));
            }
            serve(&cfg, state).await
        }
        Command::Gateway { .. } => {
            init_tracing(cfg.log_format);
            let sqlite = cfg.database_url()?.starts_with("sqlite:");
            let tokens = TokenService::new(cfg.auth_settings(sqlite)?)?;
            let db = open_database(&cfg).await?;
            let state = app_state(&cfg, db, tokens).await?;
            let gateway = start_gateway(&cfg, &state).await?;
            if let Some(addr) = cfg.gateway.metrics_addr {
                let app = gateway_admin::router(gateway.gateway.clone());
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding gateway.metrics_addr {addr}"))?;
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
            tokio::spawn(switchboard_api::run_engine_ticker(
                state.clone(),
                std::time::Duration::from_millis(cfg.state.tick_ms),
            ));
            // SIGUSR1: drain and exit once the last call ended (a rolling upgrade's signal).
            #[cfg(unix)]
            {
                let gw = gateway.gateway.clone();
                if let Ok(mut usr1) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                {
                    tokio::spawn(async move {
                        while usr1.recv().await.is_some() {
                            gw.drain(true).await;
                        }
                    });
                }
            }
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = gateway.idle_exit() => tracing::info!("drained, exiting"),
            }
            gateway.shutdown().await;
            Ok(())
        }
        Command::Migrate { .. } => {
            init_tracing(cfg.log_format);
            let db = open_database(&cfg).await?;
            db.migrate().await.context("migrating")?;
            println!("migrations applied");
            Ok(())
        }
        Command::Admin { command, .. } => {
            init_tracing(cfg.log_format);
            let db = open_database(&cfg).await?;
            // Admin commands issue no tokens; any key will do.
            let tokens = TokenService::new(cfg.auth_settings(true)?)?;
            let state = app_state(&cfg, db, tokens).await?;
            match command {
                AdminCommand::CreateOperator { email, password } => {
                    let email = switchboard_domain::Email::parse(email)?;
                    let password = switchboard_domain::Password::parse(password)?;
                    let id = switchboard_api::routes::tenants::ensure_operator(
                        &state,
                        email.clone(),
                        password,
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("operator {email} ({id}) logs in to tenant `platform`");
                }
            }
            Ok(())
        }
    }
}
