//! The runtime's few log points (plan loaded, training loss, errors), written once for
//! both worlds: with the `defmt` feature they are defmt frames (a microcontroller's
//! compact binary log, decoded on the host), on `std` builds they go to the `log` crate
//! (whatever logger the application installs), and otherwise they compile to nothing.
//!
//! Format strings are the subset both understand: `{}` placeholders over integers,
//! floats, `&str` and [`crate::Error`].

macro_rules! log_point {
    ($level:ident, $fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        ::defmt::$level!($fmt $(, $arg)*);
        #[cfg(all(feature = "std", not(feature = "defmt")))]
        ::log::$level!($fmt $(, $arg)*);
        #[cfg(not(any(feature = "std", feature = "defmt")))]
        {
            $(let _ = &$arg;)*
        }
    }};
}

macro_rules! info {
    ($($t:tt)*) => { $crate::logging::log_point!(info, $($t)*) };
}

macro_rules! warning {
    ($($t:tt)*) => { $crate::logging::log_point!(warn, $($t)*) };
}

pub(crate) use {info, log_point, warning};
