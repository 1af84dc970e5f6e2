//! Time zones by name, as people configure them and calendars send them:
//! IANA (`Europe/Berlin`) or Windows (`W. Europe Standard Time`).

pub use calcard::common::timezone::Tz;

/// The zone of that name; none for a name no database knows.
pub fn zone(name: &str) -> Option<Tz> {
    name.trim().parse::<Tz>().ok().filter(|tz| !matches!(tz, Tz::Floating))
}

#[cfg(test)]
mod tests {
    #[test]
    fn iana_and_windows_names_are_zones_and_nonsense_is_not() {
        for name in ["Europe/Berlin", " Europe/Berlin\n", "UTC", "W. Europe Standard Time", "Eastern Standard Time", "America/Sao_Paulo"] {
            assert!(super::zone(name).is_some(), "{name}");
        }
        for name in ["", "Mars/Olympus", "Europe/Berlin; DROP", "\u{0}"] {
            assert!(super::zone(name).is_none(), "{name:?}");
        }
    }
}
