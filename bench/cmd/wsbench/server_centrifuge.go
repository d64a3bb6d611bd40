package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/centrifugal/centrifuge"
)

func init() {
	targetFactories["centrifuge"] = func() serverTarget { return &centrifugeServer{} }
	targetProtocols["centrifuge"] = protoCentrifuge
}

// centrifugeChannel is the channel every connection is subscribed to
// server-side; broadcast publishes on it.
const centrifugeChannel = "bench"

// centrifugeServer is github.com/centrifugal/centrifuge: a Node with its
// in-memory broker, served by centrifuge.NewWebsocketHandler on net/http
// (one read goroutine per connection, as the library runs it). The load
// generators speak its JSON client protocol (protoCentrifuge): connect,
// then echo as an RPC answered by OnRPC with the same data, and broadcast
// as Node.Publish to the channel OnConnecting subscribed every connection
// to. The WebsocketConfig follows Centrifugo's documented memory settings
// for many connections (see bench/README.md, "Peer settings"): a write
// buffer pool instead of a write buffer per connection, a 512-byte read
// buffer, commands processed off the read loop so idle read goroutines keep
// a shallow stack; compression off; 64 KiB message limit and the same 15 s
// write timeout as the gateway.
type centrifugeServer struct {
	node *centrifuge.Node
	srv  *http.Server
	lns  []net.Listener
	wg   sync.WaitGroup
	once sync.Once
}

func (s *centrifugeServer) Start(addrs []string) error {
	node, err := centrifuge.New(centrifuge.Config{LogLevel: centrifuge.LogLevelNone})
	if err != nil {
		return err
	}
	node.OnConnecting(func(context.Context, centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		return centrifuge.ConnectReply{
			Credentials:   &centrifuge.Credentials{}, // anonymous
			Subscriptions: map[string]centrifuge.SubscribeOptions{centrifugeChannel: {}},
		}, nil
	})
	node.OnConnect(func(c *centrifuge.Client) {
		c.OnRPC(func(e centrifuge.RPCEvent, cb centrifuge.RPCCallback) {
			cb(centrifuge.RPCReply{Data: e.Data}, nil)
		})
	})
	if err := node.Run(); err != nil {
		return err
	}
	s.node = node
	mux := http.NewServeMux()
	mux.Handle("/ws", centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{
		CheckOrigin:                func(*http.Request) bool { return true },
		ReadBufferSize:             512,
		UseWriteBufferPool:         true,
		MessageSizeLimit:           64 << 10,
		WriteTimeout:               15 * time.Second,
		Compression:                false,
		ProcessCommandsOffReadLoop: true,
	}))
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range s.lns {
				_ = l.Close()
			}
			return err
		}
		s.lns = append(s.lns, ln)
	}
	for _, ln := range s.lns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = s.srv.Serve(ln)
		}()
	}
	return nil
}

func (s *centrifugeServer) Addrs() []string {
	out := make([]string, len(s.lns))
	for i, ln := range s.lns {
		out[i] = ln.Addr().String()
	}
	return out
}

func (s *centrifugeServer) Len() int { return s.node.Hub().NumClients() }

// Broadcast publishes payload as a JSON string (the harness's payloads are
// ASCII without quotes or backslashes) on the channel every connection is
// subscribed to; the Node's hub encodes the push once per protocol and
// writes it to every subscriber.
func (s *centrifugeServer) Broadcast(payload []byte) (int, error) {
	data := make([]byte, 0, len(payload)+2)
	data = append(data, '"')
	data = append(data, payload...)
	data = append(data, '"')
	n := s.node.Hub().NumSubscribers(centrifugeChannel)
	_, err := s.node.Publish(centrifugeChannel, data)
	return n, err
}

func (s *centrifugeServer) Shutdown(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		if s.srv == nil {
			return
		}
		err = s.srv.Shutdown(ctx)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		err = errors.Join(err, s.node.Shutdown(ctx))
		s.wg.Wait()
	})
	return err
}
