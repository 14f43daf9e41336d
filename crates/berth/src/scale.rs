//! Members: `berth scale NAME [--members N] [--sync K] [--sync-mode M] [--failover
//! auto|manual] [--max-failover-lag SIZE] [--purge]`, `berth switchover NAME [--to
//! MEMBER]`, `berth failover NAME [--to MEMBER] [--accept-data-loss]` and `berth
//! failover pause|resume NAME`.

use crate::env::{follow, Env};

#[derive(clap::Args)]
pub struct ScaleCmd {
    /// Instance name.
    name: String,
    /// Members afterwards (1-5): replicas are added (cloned from the primary) or the
    /// highest removed; never the primary.
    #[arg(long)]
    members: Option<u16>,
    /// Replicas that must have a commit before it returns.
    #[arg(long)]
    sync: Option<u8>,
    /// While a synchronous replica is missing: strict (commits wait) or available.
    #[arg(long, value_parser = ["strict", "available"])]
    sync_mode: Option<String>,
    /// When the primary fails: auto promotes the best replica; manual restarts the
    /// primary in place, and only `berth failover` promotes.
    #[arg(long, value_parser = ["auto", "manual"])]
    failover: Option<String>,
    /// Asynchronous instances: how far behind the primary a replica may be and still
    /// be promoted automatically, like 512kB or 4MB (binary units).
    #[arg(long, value_name = "SIZE")]
    max_failover_lag: Option<String>,
    /// Also remove the volumes of removed replicas.
    #[arg(long)]
    purge: bool,
    /// Return as soon as the task is accepted.
    #[arg(long)]
    no_wait: bool,
}

pub async fn scale(c: ScaleCmd, env: &Env) -> anyhow::Result<u8> {
    let mut body = serde_json::json!({ "purge": c.purge });
    if let Some(m) = c.members {
        body["members"] = m.into();
    }
    if let Some(k) = c.sync {
        body["sync"] = k.into();
    }
    if let Some(m) = c.sync_mode {
        body["sync_mode"] = m.into();
    }
    if let Some(f) = c.failover {
        body["failover"] = f.into();
    }
    if let Some(lag) = c.max_failover_lag {
        body["max_failover_lag"] = lag.into();
    }
    berth_cli::members_change(
        &env.client()?,
        &c.name,
        "scale",
        body,
        follow(c.no_wait),
        env.fmt,
    )
    .await?;
    Ok(0)
}

#[derive(clap::Args)]
pub struct SwitchoverCmd {
    /// Instance name.
    name: String,
    /// The replica that becomes the primary (`NAME-N` as `show` lists it, or N);
    /// default: a ready replica.
    #[arg(long)]
    to: Option<String>,
    /// Return as soon as the task is accepted.
    #[arg(long)]
    no_wait: bool,
}

pub async fn switchover(c: SwitchoverCmd, env: &Env) -> anyhow::Result<u8> {
    let body = match c.to {
        Some(to) => serde_json::json!({ "to": to }),
        None => serde_json::json!({}),
    };
    berth_cli::members_change(
        &env.client()?,
        &c.name,
        "switchover",
        body,
        follow(c.no_wait),
        env.fmt,
    )
    .await?;
    Ok(0)
}

/// `berth failover NAME` promotes a replica now; `berth failover pause NAME` and
/// `berth failover resume NAME` hold and release automatic failover.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  berth failover mydb --to mydb-2     promote mydb-2 now
  berth failover pause mydb           no automatic failover until resumed (maintenance)
  berth failover resume mydb          automatic failover again (when the mode is auto)

One name alone is always the instance: an instance called `pause` fails over with
`berth failover pause`, and is paused with `berth failover pause pause`.")]
pub struct FailoverCmd {
    /// The instance to fail over; or `pause` or `resume`, followed by the instance.
    #[arg(value_name = "NAME|pause|resume")]
    first: String,
    /// After `pause` or `resume`: the instance.
    #[arg(value_name = "NAME")]
    second: Option<String>,
    /// The replica to promote (`NAME-N` as `show` lists it, or N); default: the most
    /// advanced one that has every acknowledged commit.
    #[arg(long)]
    to: Option<String>,
    /// Promote even a replica that may lack acknowledged commits.
    #[arg(long)]
    accept_data_loss: bool,
    /// Return as soon as the task is accepted.
    #[arg(long)]
    no_wait: bool,
}

/// What `berth failover` was asked to do.
#[derive(Debug, PartialEq, Eq)]
enum FailoverAction<'a> {
    /// Promote a replica of this instance now.
    Now(&'a str),
    /// Pause (`pause`) or resume (`resume`) automatic failover of the instance.
    Hold(&'static str, &'a str),
}

impl FailoverCmd {
    /// One positional is always an instance; two are `pause|resume NAME`.
    fn action(&self) -> Result<FailoverAction<'_>, String> {
        let Some(name) = self.second.as_deref() else {
            return Ok(FailoverAction::Now(&self.first));
        };
        let verb = match self.first.as_str() {
            "pause" => "pause",
            "resume" => "resume",
            other => {
                return Err(format!(
                    "`berth failover` takes one instance name, or `pause` or `resume` and a name; \
                     {other:?} is neither (did you mean `berth failover {other}`?)"
                ))
            }
        };
        if self.to.is_some() || self.accept_data_loss {
            return Err(format!(
                "--to and --accept-data-loss apply to a failover, not to `{verb}`; \
                 run `berth failover {name} --to …` for that"
            ));
        }
        Ok(FailoverAction::Hold(verb, name))
    }
}

pub async fn failover(c: FailoverCmd, env: &Env) -> anyhow::Result<u8> {
    let name = match c.action().map_err(anyhow::Error::msg)? {
        FailoverAction::Now(name) => name.to_owned(),
        FailoverAction::Hold(verb, name) => {
            berth_cli::failover_pause(&env.client()?, name, verb, env.fmt).await?;
            return Ok(0);
        }
    };
    let mut body = serde_json::json!({ "accept_data_loss": c.accept_data_loss });
    if let Some(to) = c.to {
        body["to"] = to.into();
    }
    berth_cli::members_change(
        &env.client()?,
        &name,
        "failover",
        body,
        follow(c.no_wait),
        env.fmt,
    )
    .await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        cmd: FailoverCmd,
    }

    fn parse(args: &[&str]) -> FailoverCmd {
        let mut all = vec!["failover"];
        all.extend_from_slice(args);
        Wrap::try_parse_from(all).expect("parses").cmd
    }

    #[test]
    fn one_name_fails_over_and_pause_or_resume_take_a_second() {
        assert_eq!(
            parse(&["mydb", "--to", "mydb-2"]).action(),
            Ok(FailoverAction::Now("mydb"))
        );
        assert_eq!(
            parse(&["pause", "mydb"]).action(),
            Ok(FailoverAction::Hold("pause", "mydb"))
        );
        assert_eq!(
            parse(&["resume", "mydb"]).action(),
            Ok(FailoverAction::Hold("resume", "mydb"))
        );
        // An instance called `pause` stays addressable both ways.
        assert_eq!(parse(&["pause"]).action(), Ok(FailoverAction::Now("pause")));
        assert_eq!(
            parse(&["pause", "pause"]).action(),
            Ok(FailoverAction::Hold("pause", "pause"))
        );
    }

    #[test]
    fn mixed_forms_are_refused_with_what_to_run() {
        let e = parse(&["mydb", "other"]).action().expect_err("two names");
        assert!(e.contains("berth failover mydb"), "{e}");
        let e = parse(&["pause", "mydb", "--to", "mydb-1"])
            .action()
            .expect_err("--to with pause");
        assert!(e.contains("--to"), "{e}");
    }
}
