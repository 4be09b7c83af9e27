package main

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"strconv"
	"strings"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
)

const (
	protoEcho   = "/echo/1.0.0"
	protoSink   = "/sink/1.0.0"
	protoSource = "/source/1.0.0"
	chunkSize   = 64 << 10
)

// serveProtocols registers /echo, /sink and /source. go-libp2p runs inbound stream
// handlers on limited (relayed) connections too; only outbound streams need
// network.WithAllowLimitedConn.
func serveProtocols(h host.Host) {
	h.SetStreamHandler(protoEcho, serve(func(s network.Stream) error {
		if _, err := io.CopyBuffer(s, s, make([]byte, chunkSize)); err != nil {
			return err
		}
		return s.Close()
	}))
	h.SetStreamHandler(protoSink, serve(func(s network.Stream) error {
		n, err := io.CopyBuffer(io.Discard, s, make([]byte, chunkSize))
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(s, "%d\n", n); err != nil {
			return err
		}
		return s.Close()
	}))
	h.SetStreamHandler(protoSource, serve(func(s network.Stream) error {
		line, err := bufio.NewReader(io.LimitReader(s, 32)).ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading the byte count: %w", err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("bad byte count %q", line)
		}
		if err := writePattern(s, n); err != nil {
			return err
		}
		return s.Close()
	}))
}

// serve wraps a handler: errors are logged and reset the stream.
func serve(handle func(network.Stream) error) network.StreamHandler {
	return func(s network.Stream) {
		if err := handle(s); err != nil {
			log.Printf("%s from %s: %v", s.Protocol(), s.Conn().RemotePeer(), err)
			s.Reset()
		}
	}
}

// pattern returns n bytes of a non-trivial, position-dependent pattern.
func pattern(n int64) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// writePattern sends n pattern bytes in chunkSize pieces.
func writePattern(w io.Writer, n int64) error {
	buf := pattern(min(n, chunkSize))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
