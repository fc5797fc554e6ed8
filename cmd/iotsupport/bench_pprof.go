package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
)

// pprofEnv names a loopback address on which any iotsupport command (in
// practice `serve` started by `iotsupport bench --profile DIR`) exposes
// net/http/pprof. Unset: nothing is started.
const pprofEnv = "IOTSUPPORT_PPROF_ADDR"

func init() {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return
	}
	if host, _, err := net.SplitHostPort(addr); err != nil || !(host == "127.0.0.1" || host == "::1" || strings.EqualFold(host, "localhost")) {
		slog.Warn("ignoring "+pprofEnv+": only a loopback host:port is accepted", "value", addr)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		slog.Warn("pprof listener", "error", err)
		return
	}
	go func() { _ = http.Serve(ln, mux) }()
}
