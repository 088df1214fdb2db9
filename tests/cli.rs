//! End-to-end tests of the `canvass` command line.
