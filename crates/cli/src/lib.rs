//! `meta169`'s readers of operator input, as a library beside the binary:
//! the TOML configuration file and Neutron's `neutron_ovn_metadata_agent.ini`.
//! The binary (`src/main.rs`) uses them from here so the fuzz targets
//! (`fuzz/`) exercise exactly the code the daemons run.

pub mod config;
