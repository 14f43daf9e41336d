//! `berth alarms …`: argument parsing only; the work is in `berth_cli::alarms`.

use crate::env::Env;
use clap::Subcommand;

/// Alarm rules, their states and silences, and the webhooks and email recipients
/// they notify.
#[derive(Subcommand)]
pub(crate) enum AlarmsCommand {
    /// List alarms (of one instance, or all) with their states.
    List {
        /// Only this instance's.
        name: Option<String>,
    },
    /// Show an alarm: state, why, and every delivery attempt of its notifications.
    Show {
        /// Alarm id.
        id: String,
    },
    /// Add an alarm to an instance.
    Create {
        /// Instance name.
        instance: String,
        /// The alarm's name (lower-case letters, digits, dashes).
        #[arg(long)]
        name: String,
        /// The metric, like connections_percent (`berth metrics NAME` lists them).
        #[arg(long)]
        metric: String,
        /// average, minimum, maximum, sum or sample_count.
        #[arg(long, default_value = "average")]
        statistic: String,
        /// Period length, like 1m.
        #[arg(long, default_value = "1m")]
        period: String,
        /// Periods looked at (N).
        #[arg(long, default_value_t = 1)]
        periods: u32,
        /// Breaching periods that fire it (M; default N).
        #[arg(long)]
        datapoints: Option<u32>,
        /// The threshold.
        #[arg(long, allow_negative_numbers = true)]
        threshold: f64,
        /// greater_than, greater_or_equal, less_than or less_or_equal.
        #[arg(long, default_value = "greater_than")]
        comparison: String,
        /// What a period without samples means: missing, breaching, not_breaching or ignore.
        #[arg(long, default_value = "missing")]
        missing_data: String,
    },
    /// Delete an alarm.
    Delete {
        /// Alarm id.
        id: String,
    },
    /// Hold back an alarm's notifications for a while (its state still changes).
    Silence {
        /// Alarm id.
        id: String,
        /// How long, like 30m, 2h, 1d (0s lifts it).
        #[arg(long = "for", default_value = "1h")]
        duration: String,
    },
    /// Webhooks every alarm state change is POSTed to, signed.
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Email recipients every alarm state change is mailed to (through the SMTP
    /// relay `berth serve --smtp` names).
    Email {
        #[command(subcommand)]
        command: EmailCommand,
    },
}

/// `berth alarms email …`.
#[derive(Subcommand)]
pub(crate) enum EmailCommand {
    /// Add a recipient.
    Add {
        /// The address, like ops@example.com.
        address: String,
    },
    /// List them.
    List,
    /// Remove one.
    Delete {
        /// Recipient id.
        id: String,
    },
}

/// `berth alarms webhook …`.
#[derive(Subcommand)]
pub(crate) enum WebhookCommand {
    /// Add one (http or https); prints its signing secret once.
    Add {
        /// The URL.
        url: String,
    },
    /// List them.
    List,
    /// Delete one.
    Delete {
        /// Webhook id.
        id: String,
    },
}

/// Runs `berth alarms …`.
pub(crate) async fn run(command: AlarmsCommand, env: &Env) -> anyhow::Result<u8> {
    use berth_cli::alarms as a;
    let (client, fmt) = (env.client()?, env.fmt);
    match command {
        AlarmsCommand::List { name } => a::list(&client, name.as_deref(), fmt).await?,
        AlarmsCommand::Show { id } => a::show(&client, &id, fmt).await?,
        AlarmsCommand::Create {
            instance,
            name,
            metric,
            statistic,
            period,
            periods,
            datapoints,
            threshold,
            comparison,
            missing_data,
        } => {
            let period = berth_model::event::parse_age(&period).map_err(anyhow::Error::msg)?;
            let rule = serde_json::json!({
                "metric": metric, "statistic": statistic, "period": period.as_secs(),
                "evaluation_periods": periods, "datapoints_to_alarm": datapoints.unwrap_or(periods),
                "threshold": threshold, "comparison": comparison, "missing_data": missing_data,
            });
            a::create(&client, &instance, &name, rule, fmt).await?
        }
        AlarmsCommand::Delete { id } => a::delete(&client, &id).await?,
        AlarmsCommand::Silence { id, duration } => a::silence(&client, &id, &duration, fmt).await?,
        AlarmsCommand::Webhook { command } => match command {
            WebhookCommand::Add { url } => a::webhook_add(&client, &url, fmt).await?,
            WebhookCommand::List => a::webhook_list(&client, fmt).await?,
            WebhookCommand::Delete { id } => a::webhook_delete(&client, &id).await?,
        },
        AlarmsCommand::Email { command } => match command {
            EmailCommand::Add { address } => a::email_add(&client, &address, fmt).await?,
            EmailCommand::List => a::email_list(&client, fmt).await?,
            EmailCommand::Delete { id } => a::email_delete(&client, &id).await?,
        },
    }
    Ok(0)
}
