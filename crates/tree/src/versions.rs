//! The metadata versions Nova serves, in Nova's order. Gating compares
//! positions in these tables, never strings.

/// EC2 versions, oldest first; `latest` means the last one.
pub const EC2_VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
];

/// OpenStack versions, oldest first; `latest` means the last one.
pub const OPENSTACK_VERSIONS: &[&str] = &[
    FOLSOM, GRIZZLY, HAVANA, LIBERTY, NEWTON_ONE, NEWTON_TWO, OCATA, ROCKY, VICTORIA, EPOXY,
];

pub const FOLSOM: &str = "2012-08-10";
pub const GRIZZLY: &str = "2013-04-04";
pub const HAVANA: &str = "2013-10-17";
pub const LIBERTY: &str = "2015-10-15";
pub const NEWTON_ONE: &str = "2016-06-30";
pub const NEWTON_TWO: &str = "2016-10-06";
pub const OCATA: &str = "2017-02-22";
pub const ROCKY: &str = "2018-08-27";
pub const VICTORIA: &str = "2020-10-14";
pub const EPOXY: &str = "2025-04-04";

/// Position of an EC2 version (`latest` resolved), or `None` when unknown.
pub fn ec2_index(version: &str) -> Option<usize> {
    if version == "latest" {
        return Some(EC2_VERSIONS.len() - 1);
    }
    EC2_VERSIONS.iter().position(|v| *v == version)
}

/// Position of an OpenStack version (`latest` resolved), or `None` when unknown.
pub fn openstack_index(version: &str) -> Option<usize> {
    if version == "latest" {
        return Some(OPENSTACK_VERSIONS.len() - 1);
    }
    OPENSTACK_VERSIONS.iter().position(|v| *v == version)
}

/// Position of a version constant that is known to be in the table.
pub(crate) fn os(version: &str) -> usize {
    OPENSTACK_VERSIONS
        .iter()
        .position(|v| *v == version)
        .expect("version constants are in the table")
}

pub(crate) fn ec2(version: &str) -> usize {
    EC2_VERSIONS
        .iter()
        .position(|v| *v == version)
        .expect("version constants are in the table")
}

/// Body of `GET /` and `GET /ec2`: every EC2 version then `latest`, no
/// trailing newline.
pub fn ec2_version_listing() -> String {
    let mut lines: Vec<&str> = EC2_VERSIONS.to_vec();
    lines.push("latest");
    lines.join("\n")
}

/// Body of `GET /openstack`: the versions dated on or before `today`
/// (`YYYY-MM-DD`, UTC), then `latest`. Nova hides future versions this way.
pub fn openstack_version_listing(today: &str) -> String {
    let mut lines: Vec<&str> = OPENSTACK_VERSIONS
        .iter()
        .copied()
        .filter(|v| *v <= today)
        .collect();
    lines.push("latest");
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_is_newest() {
        assert_eq!(ec2_index("latest"), Some(8));
        assert_eq!(openstack_index("latest"), Some(9));
        assert_eq!(openstack_index("2018-08-27"), Some(7));
        assert_eq!(openstack_index("2018-08-28"), None);
        assert_eq!(ec2_index("2021-03-23"), None);
    }

    #[test]
    fn future_versions_are_hidden() {
        assert_eq!(
            openstack_version_listing("2018-01-01"),
            "2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n2017-02-22\nlatest"
        );
        assert!(openstack_version_listing("2026-11-21").ends_with("2025-04-04\nlatest"));
        assert!(ec2_version_listing().starts_with("1.0\n2007-01-19"));
        assert!(ec2_version_listing().ends_with("2009-04-04\nlatest"));
    }
}
