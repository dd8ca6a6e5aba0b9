//! The `strata` binary: `serve` runs the server; `tenant` and `key` administer a running one.

mod client;
mod config;
mod serve;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use reqwest::Method;
use tracing_subscriber::EnvFilter;

use crate::client::Client;
use crate::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Multi-tenant memory server for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the admin commands find the server, and the operator key they use.
#[derive(clap::Args)]
struct Remote {
    /// Server URL.
    #[arg(
        long,
        env = "STRATA_SERVER",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    server: String,
    /// Operator API key.
    #[arg(long, env = "STRATA_KEY", hide_env_values = true, global = true)]
    key: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Config file (see strata.example.toml).
        #[arg(long, env = "STRATA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Manage tenants on a running server.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// Manage API keys on a running server.
    Key {
        #[command(subcommand)]
        action: KeyAction,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum TenantAction {
    /// Register a tenant.
    Create {
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List tenants.
    List,
    /// Show one tenant.
    Show { id: String },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Mint an API key; its secret is printed once.
    Create {
        /// Tenant id, or `*` for an operator key.
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: Option<String>,
        /// Comma-separated: read, write, admin, all_principals (default read,write).
        #[arg(long)]
        permissions: Option<String>,
        /// Comma-separated user tokens the key is bound to.
        #[arg(long)]
        user_tokens: Option<String>,
        /// Comma-separated domains the key is limited to.
        #[arg(long)]
        domains: Option<String>,
        /// Expire the key after this many seconds.
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    /// List keys (never their secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.filter));
    // Logs go to stderr: stdout carries only the bound address and the first-start key.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    let (client, method, path, body) = match command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            init_logging(&config);
            return serve::run(config).await;
        }
        Command::Tenant { action, remote } => {
            let client = Client::new(&remote.server, remote.key)?;
            match action {
                TenantAction::Create { id, name } => (
                    client,
                    Method::POST,
                    "/v1/admin/tenants".to_owned(),
                    Some(serde_json::json!({ "id": id, "display_name": name })),
                ),
                TenantAction::List => (client, Method::GET, "/v1/admin/tenants".into(), None),
                TenantAction::Show { id } => {
                    (client, Method::GET, format!("/v1/admin/tenants/{id}"), None)
                }
            }
        }
        Command::Key { action, remote } => {
            let client = Client::new(&remote.server, remote.key)?;
            match action {
                KeyAction::Create {
                    tenant,
                    name,
                    permissions,
                    user_tokens,
                    domains,
                    expires_in_secs,
                } => {
                    let body = client::new_key_body(
                        tenant,
                        name,
                        permissions,
                        user_tokens,
                        domains,
                        expires_in_secs,
                    );
                    (client, Method::POST, "/v1/admin/keys".into(), Some(body))
                }
                KeyAction::List { tenant } => {
                    let path = match tenant {
                        Some(t) => format!("/v1/admin/keys?tenant={t}"),
                        None => "/v1/admin/keys".into(),
                    };
                    (client, Method::GET, path, None)
                }
                KeyAction::Revoke { id } => {
                    (client, Method::DELETE, format!("/v1/admin/keys/{id}"), None)
                }
            }
        }
    };
    let answer = client.call(method, &path, body).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
