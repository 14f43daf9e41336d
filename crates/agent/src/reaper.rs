//! Child processes for PID 1.
//!
//! As PID 1 the agent inherits every orphan in the container (PostgreSQL backends
//! whose postmaster died, for one) and must reap them, or they linger as zombies.
//! So one loop reaps *every* child with `waitpid(-1)`, and processes the agent
//! started itself get their exit status through a channel. Nothing else may wait
//! on a child, or the two would race for exit statuses.

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// It exited with code 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

enum Slot {
    Waiting(oneshot::Sender<Exit>),
    Exited(Exit),
}

/// A child started by [`Reaper::spawn_piped`].
pub struct Piped {
    /// Its process id.
    pub pid: u32,
    /// Yields its exit.
    pub exit: oneshot::Receiver<Exit>,
    /// Its standard input, if piped.
    pub stdin: Option<std::process::ChildStdin>,
    /// Its standard output, if piped.
    pub stdout: Option<std::process::ChildStdout>,
    /// Its standard error, if piped.
    pub stderr: Option<std::process::ChildStderr>,
}

/// Starts children and reaps all of them.
#[derive(Clone, Default)]
pub struct Reaper {
    slots: Arc<Mutex<HashMap<i32, Slot>>>,
}

impl Reaper {
    /// Starts the reaping loop; call once, before spawning anything.
    pub fn start() -> std::io::Result<Self> {
        let reaper = Self::default();
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.deliver(pid.as_raw(), Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.deliver(pid.as_raw(), Exit::Signal(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }

    fn deliver(&self, pid: i32, exit: Exit) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.remove(&pid) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(exit);
            }
            // Ours, but exited before `spawn` registered it: keep the status.
            _ => {
                slots.insert(pid, Slot::Exited(exit));
            }
        }
    }

    /// Spawns `cmd`; the receiver yields its exit.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(u32, oneshot::Receiver<Exit>)> {
        let (pid, rx, _) = self.spawn_registered(cmd)?;
        Ok((pid, rx))
    }

    /// Spawns and registers the child under the lock, so the reaper cannot deliver
    /// its exit before it is registered. Returns its stdin if one was piped.
    fn spawn_registered(
        &self,
        cmd: &mut Command,
    ) -> std::io::Result<(
        u32,
        oneshot::Receiver<Exit>,
        Option<std::process::ChildStdin>,
    )> {
        let p = self.spawn_piped(cmd)?;
        Ok((p.pid, p.exit, p.stdin))
    }

    /// Spawns `cmd` with whatever pipes it asked for; its exit comes through the
    /// reaper like every other child's (never wait on it directly).
    pub fn spawn_piped(&self, cmd: &mut Command) -> std::io::Result<Piped> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let pid = child.id();
        // Dropping `Child` neither waits nor kills: reaping is the loop's job.
        drop(child);
        let (tx, rx) = oneshot::channel();
        let raw = i32::try_from(pid).unwrap_or(i32::MAX);
        match slots.remove(&raw) {
            Some(Slot::Exited(exit)) => {
                let _ = tx.send(exit);
            }
            _ => {
                slots.insert(raw, Slot::Waiting(tx));
            }
        }
        Ok(Piped {
            pid,
            exit: rx,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Runs `cmd` to completion, feeding it `input` on standard input when given.
    pub async fn run(&self, cmd: &mut Command, input: Option<&str>) -> std::io::Result<Exit> {
        if input.is_some() {
            cmd.stdin(std::process::Stdio::piped());
        }
        let (_, rx, stdin) = self.spawn_registered(cmd)?;
        if let (Some(mut stdin), Some(text)) = (stdin, input) {
            use std::io::Write;
            let text = text.to_owned();
            // Blocking write off the runtime; closing stdin ends the program's input.
            tokio::task::spawn_blocking(move || stdin.write_all(text.as_bytes()))
                .await
                .map_err(std::io::Error::other)??;
        }
        rx.await
            .map_err(|_| std::io::Error::other("reaper stopped before the child exited"))
    }
}
