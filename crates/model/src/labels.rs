//! Docker names and labels. Names make `docker ps` explain itself; labels are how
//! reconcile finds Berth's objects, so they are the contract with the real world.

use crate::{InstanceId, InstanceName, MemberId};

/// Label on every object: the Berth installation that owns it.
pub const SITE: &str = "io.berth.site";
/// Label on instance objects: the instance's id.
pub const INSTANCE: &str = "io.berth.instance";
/// Label on instance objects: the instance's name, for people.
pub const INSTANCE_NAME: &str = "io.berth.instance-name";
/// Label on member containers and volumes: the member ordinal.
pub const MEMBER: &str = "io.berth.member";
/// Label on an instance's endpoint container (value `true`).
pub const ENDPOINT: &str = "io.berth.endpoint";
/// Label on instance objects: the project.
pub const PROJECT: &str = "io.berth.project";
/// Label on agent volumes: the SHA-256 of the `berth` binary they hold.
pub const AGENT: &str = "io.berth.agent";
/// Label on images Berth built: the recipe's input hash.
pub const IMAGE_INPUTS: &str = "io.berth.image-inputs";
/// Label on images Berth built: which engine and version.
pub const IMAGE_ENGINE: &str = "io.berth.image-engine";

/// `berth-<instance>-<id>-<n>`: the member's container. The instance id makes the
/// name unique to this installation (two installations sharing a Docker engine may
/// both have a `db1`), but names are for people: Berth finds its containers by their
/// site, instance and member labels, never by name alone.
pub fn container_name(name: &InstanceName, id: InstanceId, member: MemberId) -> String {
    format!("berth-{name}-{}-{member}", id.short())
}

/// `berth-<instance>-<id>-endpoint`: the container of the instance's endpoints.
pub fn endpoint_container_name(name: &InstanceName, id: InstanceId) -> String {
    format!("berth-{name}-{}-endpoint", id.short())
}

/// The instance's private network. The id suffix keeps a re-created instance of
/// the same name from meeting a leftover of the old one.
pub fn network_name(name: &InstanceName, id: InstanceId) -> String {
    format!("berth-{name}-{}", id.short())
}

/// The member's data volume; the id suffix guarantees that a new instance never
/// mounts the kept volume of a deleted one with the same name.
pub fn volume_name(name: &InstanceName, id: InstanceId, member: MemberId) -> String {
    format!("berth-{name}-{}-{member}-data", id.short())
}

/// The volume that holds one build of the `berth` binary, mounted read-only.
pub fn agent_volume_name(binary_sha256: &str) -> String {
    let short = binary_sha256.get(..12).unwrap_or(binary_sha256);
    format!("berth-agent-{short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable_and_unique_per_instance() {
        let n = InstanceName::try_from("db1").expect("valid");
        let a = InstanceId::new_random();
        let b = InstanceId::new_random();
        let c = container_name(&n, a, MemberId(0));
        assert!(c.starts_with("berth-db1-") && c.ends_with("-0"), "{c}");
        assert_ne!(c, container_name(&n, b, MemberId(0)));
        assert_ne!(
            volume_name(&n, a, MemberId(0)),
            volume_name(&n, b, MemberId(0))
        );
        assert!(network_name(&n, a).starts_with("berth-db1-"));
        assert_eq!(
            agent_volume_name("abcdef0123456789"),
            "berth-agent-abcdef012345"
        );
    }
}
