// Package e2e holds end-to-end tests of bmctl's control loop: the shepherd
// starting the real agent over SSH on simulated machines, the agent
// heart-beating through the real heartbeat endpoint, and Recovery acting on
// the heartbeats it writes, all on 127.0.0.1 over real PostgreSQL.
package e2e
