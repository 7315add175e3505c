//! The Southbound, read as Neutron's OVN metadata agent reads it: which
//! rows to monitor for this chassis ([`monitor`]), and what they say
//! ([`read`] → [`SbView`]): the networks that need metadata here, with
//! what addresses, and which (network, address) is which instance.

pub mod monitor;
pub mod read;
pub mod view;

pub use monitor::{monitor_options, Conditions, SB_DB};
pub use read::read;
pub use view::{MetadataPort, NetworkSpec, SbView};
