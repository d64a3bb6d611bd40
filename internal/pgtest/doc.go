// Package pgtest starts a throwaway PostgreSQL server for integration
// tests: initdb into a temporary directory, then postgres on a free
// loopback port (listen_addresses=127.0.0.1, its unix socket in the
// temporary directory, fsync on), stopped and removed when the test — or,
// with Shared, the test package — ends.
//
// PostgreSQL refuses to run as root. When the tests run as root (as CI
// does), initdb and postgres run as the "postgres" user, in a temporary
// directory owned by that user. The server is a child process of the test
// binary with a parent-death signal, so a crashed test leaves no server
// behind.
//
// The binaries (initdb, postgres) are looked up on PATH, then in
// /usr/lib/postgresql/*/bin (Debian's layout, newest version first). When
// they are missing the test is skipped with a message, unless
// SWITCHBOARD_REQUIRE_POSTGRES=1 (set by CI), in which case it fails: CI
// must never pass by skipping the PostgreSQL tests.
//
// initdb takes a second or two, so a package's tests normally share one
// server (Shared, closed from TestMain) and each test creates a database of
// its own on it (Server.CreateDatabase). Tests that stop and restart the
// server (Server.Stop, Server.Restart) start one of their own with Start.
package pgtest
