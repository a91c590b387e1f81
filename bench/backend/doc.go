// Command backend is the bench's upstream: a tiny HTTP server that answers
// every request with a short body, so that a proxy in front of it is what
// the benchmark measures.
package main
