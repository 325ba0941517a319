//! Command-line interface: argument parsing and one function per command.

use cardgate_app::admin::NewClient;
use cardgate_app::import::ImportErrorOr;
use cardgate_app::{App, Settings};
use cardgate_core::scope::{ScopeSet, KNOWN};
use cardgate_core::{AccessTokenFormat, ClientId, Environment, PersonId, TenantId};
use cardgate_jose::vault::MasterKey;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const DEMO: &str = include_str!("demo.json");

#[derive(Parser)]
#[command(
    name = "cardgate",
    version,
    about = "A self-hosted, multi-tenant card access token service"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct Common {
    /// Database: sqlite://PATH (created on first start) or postgres://…
    #[arg(
        long,
        env = "CARDGATE_DATABASE_URL",
        default_value = "sqlite://./cardgate-data/cardgate.db",
        global = true
    )]
    pub database_url: String,
    /// Base64 of 32 bytes; wraps every data and signing key. Required in production.
    #[arg(
        long,
        env = "CARDGATE_MASTER_KEY",
        hide_env_values = true,
        global = true
    )]
    pub master_key: Option<String>,
    /// The environment this instance serves (and the one import, card add and
    /// rotate-data-key work in).
    #[arg(
        long,
        env = "CARDGATE_ENVIRONMENT",
        value_enum,
        default_value = "sandbox",
        global = true
    )]
    pub environment: EnvArg,
    /// Log format.
    #[arg(
        long,
        env = "CARDGATE_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum EnvArg {
    Sandbox,
    Production,
}

impl From<EnvArg> for Environment {
    fn from(e: EnvArg) -> Self {
        match e {
            EnvArg::Sandbox => Environment::Sandbox,
            EnvArg::Production => Environment::Production,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(ServeArgs),
    /// Provision tenants, clients, persons, accounts and cards from a JSON file (idempotent);
    /// persons, accounts and cards are created in --environment.
    Import {
        /// The import file (see the README for its schema).
        file: PathBuf,
    },
    /// Manage API clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage cards.
    #[command(subcommand)]
    Card(CardCommand),
    /// Rotate signing keys and tenant data keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print row counts by kind, the oldest expired row, the database's size, the audit
    /// retention and the last export point (the same figures as the /metrics gauges).
    Status(crate::ops::PurgeArgs),
}

#[derive(Subcommand)]
pub enum CardCommand {
    /// Add one card to a tenant in --environment, read as JSON (one object of the import
    /// file's `cards` schema) from FILE or, with `-`, from standard input: never from the
    /// command line, where a PAN would land in the shell's history and in `ps`.
    Add {
        #[arg(long)]
        tenant: String,
        /// The card's JSON, or `-` for standard input.
        file: PathBuf,
    },
}

const DEFAULT_STORE_WAIT_MS: u64 = cardgate_app::STORE_WAIT.as_millis() as u64;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CARDGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// External base URL (metadata, DPoP `htu`, widget links). Default: http://<listen>.
    #[arg(long, env = "CARDGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Import a demo tenant and print its credentials and curl lines (sandbox only).
    #[arg(long)]
    pub demo: bool,
    /// How long a request waits for the store (each read, and its commit) before it is
    /// answered 503, in milliseconds.
    #[arg(long, env = "CARDGATE_STORE_WAIT_MS", default_value_t = DEFAULT_STORE_WAIT_MS,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub store_wait_ms: u64,
    /// DPoP: how old a proof's `iat` may be, in seconds (RFC 9449 §11.1).
    #[arg(long, env = "CARDGATE_DPOP_IAT_WINDOW_SECONDS",
          default_value_t = cardgate_app::dpop::DEFAULT_IAT_WINDOW_SECONDS,
          value_parser = clap::value_parser!(i64).range(1..=3600))]
    pub dpop_iat_window_seconds: i64,
    /// DPoP: the clock skew allowed either way for a proof's `iat`, in seconds.
    #[arg(long, env = "CARDGATE_DPOP_CLOCK_SKEW_SECONDS",
          default_value_t = cardgate_app::dpop::DEFAULT_CLOCK_SKEW_SECONDS,
          value_parser = clap::value_parser!(i64).range(0..=600))]
    pub dpop_clock_skew_seconds: i64,
    #[command(flatten)]
    pub purge: crate::ops::PurgeArgs,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Create a client and print its generated secret and API key (shown once).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
        /// Space- or comma-separated scopes.
        #[arg(long, default_value = "cards:read:any")]
        scopes: String,
        /// Act for this cardholder only (the `own` scopes).
        #[arg(long)]
        person_id: Option<String>,
        #[arg(long, value_enum, default_value = "jwt")]
        access_token_format: FormatArg,
        /// Also generate an SDK API key (BankEzy).
        #[arg(long)]
        sdk_api_key: bool,
    },
    /// Disable a client: its credentials and tokens stop working at once.
    Disable { id: String },
    /// Enable a disabled client again.
    Enable { id: String },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Jwt,
    Opaque,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key active; the old one stays published until its tokens expire.
    Rotate,
    /// Give a tenant a new data key of --environment and re-encrypt that environment's vault
    /// under it, online.
    RotateDataKey {
        #[arg(long)]
        tenant: String,
    },
    /// Give a tenant a new BankEzy SDK server key (`serverPubKey`) in --environment: new SDK
    /// tokens use it; tokens issued before keep theirs until they expire.
    RotateSdkKey {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check every audit chain's keyed links (from its prune checkpoint, if pruned); fails on
    /// any edited, removed, reordered or truncated event. With --file, check exported files
    /// instead (in the order given, each continuing the one before), without the database.
    Verify {
        #[arg(long)]
        file: Vec<PathBuf>,
    },
    /// Write audit events as JSON lines with their chain links and a seal per chain; by
    /// default from where the last export ended (recorded once the output is durable).
    Export(crate::ops::ExportArgs),
    /// Re-link a log that predates keyed links: verify it once under the old unkeyed rule
    /// and, only if intact, re-link it under the key derived from the master key (every
    /// command, `serve` included, does this at start); refuses a broken log, naming where it
    /// breaks.
    Relink,
}

pub fn init_logging(common: &Common) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CARDGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match common.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// The folder the SQLite file lives in (or `./cardgate-data` for other databases).
fn data_dir(database_url: &str) -> PathBuf {
    if let Some(path) = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                return parent.to_path_buf();
            }
        }
        return PathBuf::from(".");
    }
    PathBuf::from("./cardgate-data")
}

/// The master key: given, or (sandbox only) read from / generated into the data folder.
fn master_key(common: &Common) -> Result<MasterKey, String> {
    if let Some(k) = &common.master_key {
        return MasterKey::parse(k);
    }
    if matches!(common.environment, EnvArg::Production) {
        return Err(
            "production refuses to start without --master-key / CARDGATE_MASTER_KEY".into(),
        );
    }
    let dir = data_dir(&common.database_url);
    let file = dir.join("master.key");
    if let Ok(text) = std::fs::read_to_string(&file) {
        tracing::warn!(path = %file.display(), "using the sandbox master key from the data folder; set CARDGATE_MASTER_KEY for real deployments");
        return MasterKey::parse(&text);
    }
    create_private_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let key = MasterKey::generate().map_err(|e| e.to_string())?;
    write_private(&file, &key.to_base64())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    eprintln!(
        "WARNING: no master key given; generated a sandbox master key into {}.\n\
         WARNING: anyone who can read that file can decrypt the vault. Set CARDGATE_MASTER_KEY for real deployments.",
        file.display()
    );
    tracing::warn!(path = %file.display(), "generated a sandbox master key");
    Ok(key)
}

/// Creates `dir` (and its missing parents) readable by its owner only (`0700`); an existing
/// folder keeps its permissions.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(content.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, content)
    }
}

async fn open(common: &Common, public_url: String) -> Result<Arc<App>, String> {
    let master = master_key(common)?;
    let store = cardgate_store::connect(&common.database_url, cardgate_app::audit_key(&master))
        .await
        .map_err(|e| e.to_string())?;
    let settings = Settings {
        environment: common.environment.into(),
        public_url,
    };
    let courier = cardgate_http::courier::HttpCourier::new(settings.environment)
        .map_err(|e| e.to_string())?;
    let svc = App::start(store, master, settings, courier)
        .await
        .map_err(|e| e.to_string())?;
    svc.set_store_wait(cardgate_app::COMMAND_STORE_WAIT);
    Ok(svc)
}

pub async fn run(cli: Cli) -> Result<(), String> {
    let common = cli.common;
    match cli.command {
        Command::Serve(args) => serve(&common, args).await,
        Command::Import { file } => {
            let svc = open(&common, "http://127.0.0.1:8080".into()).await?;
            let bytes =
                std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            import(&svc, &bytes).await
        }
        Command::Card(CardCommand::Add { tenant, file }) => {
            let tenant = TenantId::parse(&tenant)?;
            let bytes = zeroize::Zeroizing::new(if file.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .map_err(|e| format!("cannot read standard input: {e}"))?;
                buf
            } else {
                std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?
            });
            let svc = open(&common, "http://127.0.0.1:8080".into()).await?;
            let card = cardgate_core::import::parse_card(&bytes, svc.now_ms())
                .map_err(|e| format!("card refused: {e}"))?;
            let id = card.id;
            svc.importer()
                .add_card(&tenant, card)
                .await
                .map_err(|e| format!("card refused: {e}"))?;
            println!("card {id} added to tenant {tenant}");
            Ok(())
        }
        Command::Client(cmd) => {
            let svc = open(&common, "http://127.0.0.1:8080".into()).await?;
            client(&svc, cmd, common.environment.into()).await
        }
        Command::Keys(KeysCommand::Rotate) => {
            let svc = open(&common, "http://127.0.0.1:8080".into()).await?;
            let kid = svc
                .admin()
                .rotate_signing_key("admin")
                .await
                .map_err(|e| e.to_string())?;
            println!("new signing key {kid} is active for {}", svc.env());
            Ok(())
        }
        Command::Keys(KeysCommand::RotateDataKey { tenant }) => {
            let svc = open(&common, "http://127.0.0.1:8080".into()).await?;
            let tenant = TenantId::parse(&tenant)?;
            let (version, n) = svc
                .admin()
                .rotate_data_key(&tenant)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "tenant {tenant} now uses data key version {version}; re-encrypted {n} records"
            );
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { file }) if !file.is_empty() => {
            crate::ops::verify_files(&master_key(&common)?, &file)
        }
        Command::Audit(AuditCommand::Export(args)) => {
            let svc = open(&common, "http://127.0.0.1:8080".into()).await?;
            crate::ops::export(&svc, args).await
        }
        Command::Status(args) => {
            let svc = open(&common, "http://127.0.0.1:8080".into()).await?;
            crate::ops::status(&svc, &args).await
        }
        Command::Keys(KeysCommand::RotateSdkKey { tenant }) => {
            let svc = open(&common, "http://127.0.0.1:8080".into()).await?;
            let tenant = TenantId::parse(&tenant)?;
            let version = svc
                .sdk_tokens()
                .rotate_server_key(&tenant, "admin")
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "tenant {tenant} now issues SDK tokens with server key version {version} ({})",
                svc.env()
            );
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { .. }) => {
            // Reads only: never re-links, so a log cannot be blessed by the check itself.
            let master = master_key(&common)?;
            let store =
                cardgate_store::connect(&common.database_url, cardgate_app::audit_key(&master))
                    .await
                    .map_err(|e| e.to_string())?;
            match cardgate_app::admin::verify_audit_log(store.as_ref(), &master)
                .await
                .map_err(|e| e.to_string())?
            {
                Ok(n) => {
                    println!("audit chain intact: {n} events");
                    Ok(())
                }
                Err(b) => Err(format!("audit chain broken: {b}")),
            }
        }
        Command::Audit(AuditCommand::Relink) => {
            let master = master_key(&common)?;
            let store =
                cardgate_store::connect(&common.database_url, cardgate_app::audit_key(&master))
                    .await
                    .map_err(|e| e.to_string())?;
            let env = common.environment.into();
            match App::prepare(store.as_ref(), &master, env, "admin", true)
                .await
                .map_err(|e| e.to_string())?
            {
                None => println!("the audit log is already keyed: nothing to do"),
                Some(events) => println!(
                    "the audit log verified under the old unkeyed rule: re-linked {events} events under the audit key"
                ),
            }
            Ok(())
        }
    }
}

async fn import(svc: &Arc<App>, bytes: &[u8]) -> Result<(), String> {
    let plan = cardgate_core::import::parse(bytes, svc.now_ms())
        .map_err(|e| format!("import refused: {e}"))?;
    match svc.importer().import(plan).await {
        Ok(r) if r.changes == 0 => println!("imported {} tenant(s): nothing changed", r.tenants),
        Ok(r) => println!("imported {} tenant(s): {} change(s)", r.tenants, r.changes),
        Err(ImportErrorOr::Invalid(e)) => return Err(format!("import refused: {e}")),
        Err(ImportErrorOr::Service(e)) => return Err(e.to_string()),
    }
    Ok(())
}

async fn client(svc: &Arc<App>, cmd: ClientCommand, env: Environment) -> Result<(), String> {
    match cmd {
        ClientCommand::Create {
            tenant,
            id,
            scopes,
            person_id,
            access_token_format,
            sdk_api_key,
        } => {
            let scopes = ScopeSet::parse(&scopes.replace(',', " ")).map_err(|e| e.to_string())?;
            if let Some(bad) = scopes.iter().find(|s| !KNOWN.contains(s)) {
                return Err(format!("unknown scope {bad}; known: {}", KNOWN.join(", ")));
            }
            let new = NewClient {
                tenant: TenantId::parse(&tenant)?,
                id: ClientId::parse(&id)?,
                environment: env,
                scopes,
                person_id: person_id.as_deref().map(PersonId::parse).transpose()?,
                access_token_format: match access_token_format {
                    FormatArg::Jwt => AccessTokenFormat::Jwt,
                    FormatArg::Opaque => AccessTokenFormat::Opaque,
                },
                with_sdk_api_key: sdk_api_key,
            };
            let created = svc
                .admin()
                .create_client(new)
                .await
                .map_err(|e| e.to_string())?;
            println!("client_id:     {}", created.client.id);
            println!("client_secret: {}", created.secret.expose());
            println!("api_key:       {}", created.api_key.expose());
            if let Some(k) = &created.sdk_api_key {
                println!("sdk_api_key:   {}", k.expose());
            }
            println!("These secrets are shown once and stored only as hashes. Keep them now.");
            Ok(())
        }
        ClientCommand::Disable { id } => {
            svc.admin()
                .set_client_disabled(&ClientId::parse(&id)?, true)
                .await
                .map_err(|e| e.to_string())?;
            println!("client {id} disabled");
            Ok(())
        }
        ClientCommand::Enable { id } => {
            svc.admin()
                .set_client_disabled(&ClientId::parse(&id)?, false)
                .await
                .map_err(|e| e.to_string())?;
            println!("client {id} enabled");
            Ok(())
        }
    }
}

async fn serve(common: &Common, args: ServeArgs) -> Result<(), String> {
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen));
    let public_url = public_url.trim_end_matches('/').to_string();
    let scheme_ok = ["http://", "https://"].iter().any(|p| {
        public_url
            .strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty())
    });
    if !scheme_ok
        || public_url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "--public-url must be an http:// or https:// URL, not {public_url:?}"
        ));
    }
    if args.demo && matches!(common.environment, EnvArg::Production) {
        return Err("--demo is for sandbox only".into());
    }
    // Listen first: a bad address must not leave a new database or master key behind.
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let svc = open(common, public_url.clone()).await?;
    if args.demo {
        import(&svc, DEMO.as_bytes()).await?;
        print_demo(&public_url);
    }
    // Requests wait for the store at most this long, then answer 503.
    svc.set_store_wait(Duration::from_millis(args.store_wait_ms));
    svc.set_dpop_window(args.dpop_iat_window_seconds, args.dpop_clock_skew_seconds);
    svc.spawn_pollers(Duration::from_secs(1));
    args.purge.start(&svc);
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, environment = %svc.env(), backend = svc.store.backend(), "cardgate is listening");
    let app = cardgate_http::router(svc.clone());
    cardgate_http::serve(
        listener,
        app,
        cardgate_http::Timeouts::default(),
        shutdown_signal(),
    )
    .await;
    tracing::info!("cardgate stopped");
    Ok(())
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
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

fn print_demo(base: &str) {
    let card = "e9293471-5eb3-4dbc-916c-dbaf9e2deefd";
    let inactive = "0b3f1c9e-55c4-4a8e-9d3e-8c1f2a7b6d10";
    let person = "775596ae-2624-40af-a9dc-9756110a4a04";
    let totp = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let id = "demo-backend";
    let secret = "demo-backend-secret-change-me-0123456789";
    let api_key = "demo-backend-api-key-change-me-0123456789";
    let json = "python3 -c 'import sys,json; print(json.load(sys.stdin)[sys.argv[1]])'";
    println!(
        r#"
== cardgate demo (sandbox) ==
tenant:        demo   (financial_institution_id 12345678)
client_id:     {id}
client_secret: {secret}
api_key:       {api_key}
opaque client: demo-opaque / demo-opaque-secret-change-me-01234567890
card:          {card} (ACTIVE, account F50091)   inactive card: {inactive}

# Native OAuth2: a JWT access token, then introspect it
curl -s -u {id}:{secret} -d grant_type=client_credentials {base}/oauth2/token
AT=$(curl -s -u {id}:{secret} -d grant_type=client_credentials {base}/oauth2/token | {json} access_token)
curl -s -u {id}:{secret} --data-urlencode "token=$AT" {base}/oauth2/introspect
curl -s -u {id}:{secret} --data-urlencode "token=$AT" {base}/oauth2/revoke
curl -s {base}/.well-known/oauth-authorization-server

# Fiserv dialect
curl -s -X POST '{base}/fiserv/cs/oauth2/v1/token?scope=cards:read:any' -u {id}:{secret} \
  -H 'Content-Type: application/x-www-form-urlencoded' -H 'x-fapi-financial-id: 12345678' -d grant_type=client_credentials

# Equals Money dialect: a single-use card token, redeemed for the card details
CT=$(curl -s '{base}/equals/v2/cards/{card}/access-token?accountId=F50091' -H 'Authorization: ApiKey {api_key}' | {json} token)
curl -s -H "Authorization: Bearer $CT" {base}/v1/cards/{card}/details

# Synctera dialect: a one-time widget token (a retry with the same Idempotency-Key gets the same one)
curl -s -X POST '{base}/synctera/v1/cards/{card}/widget_token?widget_type=REVEAL' -H 'Authorization: Bearer {api_key}' -H 'Idempotency-Key: demo-reveal-1'
# ... and a widget page for it (open it in a browser; embedded, only http://127.0.0.1:9000 may frame it)
WT=$(curl -s '{base}/synctera/v1/cards/{card}/widget_token?widget_type=REVEAL' -H 'Authorization: Bearer {api_key}' | {json} widget_token)
echo "{base}/widgets/v1/reveal?tenant=demo&origin=http://127.0.0.1:9000#token=$WT&card={card}"

# Native card tokens: mint (Basic auth), then redeem
CT=$(curl -s -u {id}:{secret} -H 'Content-Type: application/json' -d '{{"operations":["GET_PIN"]}}' {base}/v1/cards/{card}/tokens | {json} token)
curl -s -H "Authorization: Bearer $CT" {base}/v1/cards/{card}/pin
CT=$(curl -s -u {id}:{secret} -H 'Content-Type: application/json' -d '{{"operations":["ACTIVATE"]}}' {base}/v1/cards/{inactive}/tokens | {json} token)
curl -s -X POST -H "Authorization: Bearer $CT" {base}/v1/cards/{inactive}/activate
CT=$(curl -s -u {id}:{secret} -H 'Content-Type: application/json' -d '{{"operations":["SET_PIN"]}}' {base}/v1/cards/{card}/tokens | {json} token)
curl -s -X PUT -H "Authorization: Bearer $CT" -H 'Content-Type: application/json' -d '{{"pin":"1357"}}' {base}/v1/cards/{card}/pin
CT=$(curl -s -u {id}:{secret} -H 'Content-Type: application/json' -d '{{"operations":["ADD_CARD_TO_WALLET"]}}' {base}/v1/cards/{card}/tokens | {json} token)
curl -s -H "Authorization: Bearer $CT" {base}/v1/cards/{card}/wallet-eligibility

# Treasury Prime dialect: a DPoP-bound person token, then the person's card details, each call
# with a fresh DPoP proof (built by jwcrypto, `pip install jwcrypto`; run from the repository root)
DPOP=crates/cardgate/tests/api/clients/dpop_proof.py
P=$(python3 $DPOP POST {base}/treasuryprime/person/{person}/uxt_access_token)
TP=$(curl -s -u {id}:{secret} -H 'Content-Type: application/json' -d "{{\"dpop\":\"$P\"}}" {base}/treasuryprime/person/{person}/uxt_access_token | {json} access_token)
curl -s -H "Authorization: DPoP $TP" -H "DPoP: $(python3 $DPOP GET {base}/v1/cards/{card}/details "$TP")" {base}/v1/cards/{card}/details

# MFA step-up: a TOTP session for the cardholder (authenticator secret {totp})
curl -s -u {id}:{secret} -H 'Content-Type: application/json' -d '{{"channel":"totp"}}' {base}/v1/persons/{person}/mfa/sessions

# BankEzy dialect (encrypted payloads): the partner server's token call, then the SDK lists the
# account's cards and reveals one, decrypted with the SDK's own key (python3 with jwcrypto)
python3 scripts/bankezy_demo.py --base {base} --api-key demo-bankezy-api-key-change-me-0123456789 \
  --sdk-api-key demo-bankezy-sdk-api-key-change-me-012345 --payload-key ZGVtby1iYW5rZXp5LXBheWxvYWQta2V5LTMyYnl0ZXM --account-number 1234567890

# Operations
curl -s {base}/healthz; curl -s {base}/.well-known/jwks.json; curl -s {base}/metrics | head; curl -s {base}/openapi.json | head -c 300
"#
    );
}
