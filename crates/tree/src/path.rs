//! Request paths, normalised the way Nova normalises them: leading `/`
//! optional, `//` and `.` collapsed, trailing `/` dropped, anything that is
//! not under `ec2` or `openstack` is under `ec2`. Unlike Nova, `..` is
//! refused instead of resolved: no real client sends it, and a path that
//! climbs is a probe, not a request.

/// Longest decoded path accepted.
pub const MAX_PATH_LEN: usize = 1024;
/// Most segments accepted in one path.
pub const MAX_SEGMENTS: usize = 16;

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataPath {
    /// `/`: the EC2 version list, served before identification.
    Root,
    /// `/ec2`: the EC2 version list, after identification.
    Ec2Versions,
    /// `/openstack`: the OpenStack version list.
    OpenStackVersions,
    /// Anything below: segments starting with `ec2` or `openstack`.
    Item(Vec<String>),
}

/// Why a path was refused; each message tells the client what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The decoded path is longer than [`MAX_PATH_LEN`].
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("path has more than {MAX_SEGMENTS} segments")]
    TooDeep,
    /// A NUL or other control character.
    #[error("path contains a control character")]
    ControlCharacter,
    /// A `..` segment.
    #[error("path must not contain '..' segments")]
    ParentSegment,
}

impl MetadataPath {
    /// Normalise a decoded path.
    pub fn parse(decoded: &str) -> Result<Self, PathError> {
        if decoded.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        if decoded.chars().any(|c| c.is_control()) {
            return Err(PathError::ControlCharacter);
        }
        let mut segments: Vec<String> = Vec::new();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => continue,
                ".." => return Err(PathError::ParentSegment),
                s => {
                    if segments.len() >= MAX_SEGMENTS {
                        return Err(PathError::TooDeep);
                    }
                    segments.push(s.to_string());
                }
            }
        }
        let Some(first) = segments.first() else {
            return Ok(MetadataPath::Root);
        };
        if first != "ec2" && first != "openstack" {
            segments.insert(0, "ec2".to_string());
        }
        if segments.len() == 1 {
            return Ok(if segments[0] == "ec2" {
                MetadataPath::Ec2Versions
            } else {
                MetadataPath::OpenStackVersions
            });
        }
        Ok(MetadataPath::Item(segments))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(parts: &[&str]) -> MetadataPath {
        MetadataPath::Item(parts.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn normalises_like_nova() {
        assert_eq!(MetadataPath::parse("/"), Ok(MetadataPath::Root));
        assert_eq!(MetadataPath::parse(""), Ok(MetadataPath::Root));
        assert_eq!(MetadataPath::parse("/ec2/"), Ok(MetadataPath::Ec2Versions));
        assert_eq!(
            MetadataPath::parse("/openstack"),
            Ok(MetadataPath::OpenStackVersions)
        );
        assert_eq!(
            MetadataPath::parse("/latest/meta-data/"),
            Ok(item(&["ec2", "latest", "meta-data"]))
        );
        assert_eq!(
            MetadataPath::parse("//latest/./meta-data//hostname/"),
            Ok(item(&["ec2", "latest", "meta-data", "hostname"]))
        );
        assert_eq!(
            MetadataPath::parse("/openstack/latest/meta_data.json"),
            Ok(item(&["openstack", "latest", "meta_data.json"]))
        );
    }

    #[test]
    fn refuses_probes() {
        assert_eq!(
            MetadataPath::parse("/latest/../x"),
            Err(PathError::ParentSegment)
        );
        assert_eq!(
            MetadataPath::parse("/latest\0"),
            Err(PathError::ControlCharacter)
        );
        assert_eq!(
            MetadataPath::parse(&"a".repeat(2000)),
            Err(PathError::TooLong)
        );
        assert_eq!(
            MetadataPath::parse(&"/a".repeat(40)),
            Err(PathError::TooDeep)
        );
    }
}
