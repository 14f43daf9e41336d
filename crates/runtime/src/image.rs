//! Engine images built without a registry: a Debian root file system made by
//! `mmdebstrap` from the host's Debian mirror, then imported into Docker.
//!
//! An image's tag ends with the hash of its inputs (suite, mirror, packages, hooks,
//! recipe format), so a changed recipe is a new tag and an unchanged one is found
//! instantly. Two caches, both keyed by that hash and both kept to one copy per
//! engine version: the Docker image itself, and the root file system tarball under
//! the cache directory (re-importing it takes seconds where `mmdebstrap` takes a
//! minute). Where a registry is reachable an upstream image can be named instead.

use crate::{Result, Runtime, RuntimeError};
use berth_engine::{Engine, ImageRecipe};
use berth_model::EngineVersion;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio::io::AsyncBufReadExt;

/// Bump when the way images are built changes, so every image is rebuilt.
const RECIPE_FORMAT: &str = "berth-image-v1";

/// The repository images of an engine are tagged in.
pub fn repository(engine: &dyn Engine) -> String {
    format!("berth/{}", engine.kind())
}

/// The Debian mirror the host's apt uses (the first `URIs:` or `deb` line that is
/// not the security archive), or `BERTH_DEBIAN_MIRROR` when set.
pub fn host_debian_mirror() -> String {
    if let Ok(m) = std::env::var("BERTH_DEBIAN_MIRROR") {
        return m;
    }
    let mut texts = vec![];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        texts.extend(paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    texts.extend(std::fs::read_to_string("/etc/apt/sources.list").ok());
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("URIs:")
                .map(|u| u.split_whitespace().next().unwrap_or("").to_owned())
                .or_else(|| {
                    l.strip_prefix("deb ")
                        .and_then(|r| r.split_whitespace().find(|w| w.starts_with("http")))
                        .map(str::to_owned)
                })
        })
        .find(|u| u.starts_with("http") && !u.contains("security"))
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned())
}

/// The hash of everything that goes into an image.
pub fn inputs_hash(recipe: &ImageRecipe, mirror: &str) -> String {
    let mut h = Sha256::new();
    for part in [RECIPE_FORMAT, recipe.suite, mirror] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for p in &recipe.packages {
        h.update(p.as_bytes());
        h.update([1]);
    }
    for c in &recipe.customize {
        h.update(c.as_bytes());
        h.update([2]);
    }
    hex::encode(h.finalize())[..16].to_owned()
}

/// The tag an engine version's image gets.
pub fn image_tag(engine: &dyn Engine, version: &EngineVersion) -> String {
    let recipe = engine.image_recipe(version);
    format!(
        "{}:{}-{}",
        repository(engine),
        version,
        inputs_hash(&recipe, &host_debian_mirror())
    )
}

/// Builds engine images; one per process (it serialises builds of the same tag).
pub struct ImageBuilder {
    cache_dir: PathBuf,
    timeout: std::time::Duration,
    locks: tokio::sync::Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

/// How long an image build or pull may take before it is stopped: a mirror that
/// accepts connections and never answers must not hang a create forever.
pub const DEFAULT_BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20 * 60);

impl ImageBuilder {
    /// A builder keeping root file systems under `cache_dir`, giving up on a build
    /// (or pull) after `timeout`.
    pub fn new(cache_dir: PathBuf, timeout: std::time::Duration) -> Self {
        Self {
            cache_dir,
            timeout,
            locks: Default::default(),
        }
    }

    /// Runs `work` within the build timeout; past it the work is dropped (which kills
    /// mmdebstrap) and the error says what to check.
    async fn bounded<T>(
        &self,
        tag: &str,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(RuntimeError::ImageBuild {
                    tag: tag.to_owned(),
                    reason: format!(
                        "did not finish within {}s and was stopped; check that the package mirror (or registry) \
                         answers, then try again (the limit is --image-build-timeout)",
                        self.timeout.as_secs()
                    ),
                })
            })
    }

    /// Where root file systems and catalogs are cached.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Whether the image exists locally.
    pub async fn exists(&self, runtime: &Runtime, tag: &str) -> Result<bool> {
        match runtime.docker().inspect_image(tag).await {
            Ok(_) => Ok(true),
            Err(e) if crate::status(&e) == Some(404) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes sure the engine version's image exists, building it if not; `progress`
    /// hears each phase and the builder's output lines. Returns the tag and whether
    /// it had to be built.
    pub async fn ensure(
        &self,
        runtime: &Runtime,
        engine: &dyn Engine,
        version: &EngineVersion,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(String, bool)> {
        let tag = image_tag(engine, version);
        if self.exists(runtime, &tag).await? {
            return Ok((tag, false));
        }
        self.bounded(&tag, self.build(runtime, engine, version, &tag, progress))
            .await
    }

    async fn build(
        &self,
        runtime: &Runtime,
        engine: &dyn Engine,
        version: &EngineVersion,
        tag: &str,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(String, bool)> {
        let tag = tag.to_owned();
        let lock = {
            let mut locks = self.locks.lock().await;
            locks.entry(tag.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if self.exists(runtime, &tag).await? {
            return Ok((tag, false));
        }
        let fail = |reason: String| RuntimeError::ImageBuild {
            tag: tag.clone(),
            reason,
        };
        let io = |what: String| move |source| RuntimeError::Io { what, source };
        tokio::fs::create_dir_all(&self.cache_dir)
            .await
            .map_err(io(format!("creating {}", self.cache_dir.display())))?;
        // Other processes (another Berth, a parallel test run) may build the same
        // image: an exclusive file lock makes them wait and then find it done.
        let lock_path = self.cache_dir.join(format!("{}.lock", engine.kind()));
        // Polled, not blocking: a build that times out must not leave a thread
        // waiting on the lock.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("opening the image cache lock".into()))?;
        let file_lock = loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(l) => break l,
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    file = f;
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err((_, e)) => {
                    return Err(io("locking the image cache".into())(e.into()));
                }
            }
        };
        if self.exists(runtime, &tag).await? {
            return Ok((tag, false));
        }
        let recipe = engine.image_recipe(version);
        let mirror = host_debian_mirror();
        let hash = inputs_hash(&recipe, &mirror);
        let stem = format!("{}-{}", engine.kind(), version);
        let tarball = self.cache_dir.join(format!("{stem}-{hash}.tar"));
        if !tarball.is_file() {
            progress(&format!(
                "building the {stem} root file system from {mirror} (mmdebstrap)"
            ));
            build_rootfs(&recipe, &mirror, &tarball, progress)
                .await
                .map_err(fail)?;
        } else {
            progress("found the cached root file system");
        }
        progress("importing into Docker");
        import(runtime, &tarball, &tag).await?;
        remove_stale(
            runtime,
            engine,
            version,
            &tag,
            &self.cache_dir,
            &stem,
            &tarball,
        )
        .await;
        drop(file_lock);
        progress("image ready");
        Ok((tag, true))
    }
}

impl ImageBuilder {
    /// Makes sure an upstream image is present, pulling it from its registry if not.
    /// Returns the reference and whether it had to be pulled.
    pub async fn ensure_pulled(
        &self,
        runtime: &Runtime,
        reference: &str,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(String, bool)> {
        if self.exists(runtime, reference).await? {
            return Ok((reference.to_owned(), false));
        }
        self.bounded(reference, self.pull(runtime, reference, progress))
            .await
    }

    async fn pull(
        &self,
        runtime: &Runtime,
        reference: &str,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(String, bool)> {
        progress(&format!("pulling {reference}"));
        let opts = CreateImageOptionsBuilder::new()
            .from_image(reference)
            .build();
        let mut stream = runtime.docker().create_image(Some(opts), None, None);
        while let Some(info) = stream.next().await {
            let info = info.map_err(|e| RuntimeError::ImageBuild {
                tag: reference.to_owned(),
                reason: format!("pull failed ({e}); is the registry reachable? Without one, drop the image override and let Berth build the image"),
            })?;
            if let Some(status) = info.status {
                progress(&status);
            }
        }
        Ok((reference.to_owned(), true))
    }
}

/// Kills a process group when dropped before it finished (a build that timed out),
/// then removes the scratch directory it worked in, so a stopped build leaves nothing.
struct ProcessGroup(Option<i32>, PathBuf);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

async fn build_rootfs(
    recipe: &ImageRecipe,
    mirror: &str,
    tarball: &Path,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> std::result::Result<(), String> {
    if which("mmdebstrap").is_none() {
        return Err("mmdebstrap is not installed; install it with `apt-get install mmdebstrap` (it needs root)".into());
    }
    let partial = tarball.with_extension("tar.partial");
    // mmdebstrap's own temporary directories go here, not to /tmp, so that a build
    // stopped by its timeout (SIGKILL: no chance to clean up) leaves nothing behind.
    let scratch = tarball.with_extension("scratch");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let mut cmd = tokio::process::Command::new("mmdebstrap");
    cmd.arg("--variant=essential")
        .arg(format!("--include={}", recipe.packages.join(",")))
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg("--format=tar");
    for hook in &recipe.customize {
        cmd.arg(format!("--customize-hook={hook}"));
    }
    cmd.arg(recipe.suite)
        .arg(&partial)
        .arg(mirror)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .env("TMPDIR", &scratch)
        // Its own process group, so a timeout stops apt and everything it started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting mmdebstrap: {e}"))?;
    let mut group = ProcessGroup(child.id().and_then(|p| i32::try_from(p).ok()), scratch);
    let mut tail: Vec<String> = vec![];
    if let Some(stderr) = child.stderr.take() {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            progress(&line);
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for mmdebstrap: {e}"))?;
    group.0 = None;
    if !status.success() {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(format!(
            "mmdebstrap failed ({status}):\n{}",
            tail.join("\n")
        ));
    }
    tokio::fs::rename(&partial, tarball)
        .await
        .map_err(|e| format!("keeping the root file system: {e}"))
}

async fn import(runtime: &Runtime, tarball: &Path, tag: &str) -> Result<()> {
    let (repo, tag_part) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let file = tokio::fs::File::open(tarball)
        .await
        .map_err(|source| RuntimeError::Io {
            what: format!("opening {}", tarball.display()),
            source,
        })?;
    let body = tokio_util::io::ReaderStream::new(file).map(|chunk| chunk.unwrap_or_default());
    let opts = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(tag_part)
        .build();
    runtime
        .docker()
        .create_image(Some(opts), Some(bollard::body_stream(body)), None)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Keeps one copy per engine version: older tags of the repository and older
/// root file systems go.
async fn remove_stale(
    runtime: &Runtime,
    engine: &dyn Engine,
    version: &EngineVersion,
    keep_tag: &str,
    cache_dir: &Path,
    stem: &str,
    keep_tarball: &Path,
) {
    let repo = repository(engine);
    let filters = HashMap::from([("reference".to_owned(), vec![format!("{repo}:{version}-*")])]);
    if let Ok(images) = runtime
        .docker()
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
    {
        for img in images {
            for t in img.repo_tags.iter().filter(|t| t.as_str() != keep_tag) {
                // In use by a container: Docker refuses, and the old image stays.
                let _ = runtime
                    .docker()
                    .remove_image(t, Some(RemoveImageOptionsBuilder::new().build()), None)
                    .await;
            }
        }
    }
    if let Ok(mut dir) = tokio::fs::read_dir(cache_dir).await {
        while let Ok(Some(entry)) = dir.next_entry().await {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{stem}-")) && p != keep_tarball {
                let _ = tokio::fs::remove_file(&p).await;
            }
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_every_input() {
        let r = ImageRecipe {
            suite: "bookworm",
            packages: vec!["postgresql-15"],
            customize: vec!["true"],
        };
        let base = inputs_hash(&r, "http://m/debian");
        assert_eq!(base, inputs_hash(&r.clone(), "http://m/debian"));
        assert_ne!(base, inputs_hash(&r, "http://other/debian"));
        let mut r2 = r.clone();
        r2.packages.push("x");
        assert_ne!(base, inputs_hash(&r2, "http://m/debian"));
        let mut r3 = r.clone();
        r3.customize = vec!["false"];
        assert_ne!(base, inputs_hash(&r3, "http://m/debian"));
    }
}
