// Package procfault sends process faults to processes a drill started
// itself (never anything else): kill -9, SIGSTOP and SIGCONT, and a pulse
// of stops and continues (a gray failure: the process is slow, not dead —
// its connections stay open, its heartbeats arrive late).
package procfault
