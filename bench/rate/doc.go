// Command rate sends HTTP requests at a fixed rate (open loop) and prints
// latency percentiles. Latency is measured from when a request was due, not
// from when it was sent, so a stalled server is not hidden (no coordinated
// omission). It is the bench's stand-in for wrk2, which Debian lacks.
//
//	rate -url http://127.0.0.1:19003/ -rate 5000 -duration 10s -H 'X-Route-Key: u42'
package main
