package consultest

import (
	"fmt"
	"io"
	"net"
	"strconv"
)

// freePorts asks the kernel for n distinct ports that are free for both TCP
// and UDP on ip (DNS and Serf use both). The sockets are closed before it
// returns, so another process may still take a port before the agent binds
// it: callers retry the start when the agent reports a port in use.
func freePorts(ip string, n int) ([]int, error) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	ports := make([]int, 0, n)
	for attempts := 0; len(ports) < n; attempts++ {
		if attempts > 20*n {
			return nil, fmt.Errorf("no port free for both TCP and UDP on %s after %d attempts", ip, attempts)
		}
		tl, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, fmt.Errorf("find a free port on %s: %w", ip, err)
		}
		held = append(held, tl)
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			continue // free for TCP only; keep the TCP socket so it is not offered again
		}
		held = append(held, ul)
		ports = append(ports, port)
	}
	return ports, nil
}

// portsFree reports whether every port is free on ip for TCP and UDP.
func portsFree(ip string, ports ...int) bool {
	for _, p := range ports {
		addr := net.JoinHostPort(ip, strconv.Itoa(p))
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		tl.Close()
		ul, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		ul.Close()
	}
	return true
}
