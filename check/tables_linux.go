//go:build linux

package check

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
)

// This file answers "which sockets listen on port P in the network namespace
// of process N?" with the inodes of those sockets, from one of two sources:
//
//   - a sock_diag netlink dump, asked for LISTEN state on port P only. The
//     kernel then walks its table of listening sockets and nothing else.
//   - /proc/N/net/tcp and /proc/N/net/tcp6. Producing each of these files
//     makes the kernel also walk its whole hash table of established
//     connections, which is sized by memory, not by use (262,144 buckets on a
//     24 GB machine): about a millisecond per file, even with no connections.
//
// The dump is some forty times cheaper (see BenchmarkListening), but a
// netlink socket answers for the namespace it was created in, svcwrap's own,
// so it serves only a child that shares that namespace (the usual case);
// /proc serves every other case, and any case where netlink fails.

// diagDisabled is set once sock_diag has failed in a way that will not go
// away (no inet_diag in the kernel, a seccomp or LSM denial), so that later
// calls go straight to /proc without paying for a failed attempt each time.
var diagDisabled atomic.Bool

// listenInodes appends to inodes the inode of every TCP socket, IPv4 or IPv6,
// in LISTEN state on port in pid's network namespace. ours says that they
// came from a dump of our own namespace (pid shares it). If pid does not
// exist, the error wraps os.ErrNotExist.
func listenInodes(inodes []uint64, pid, port int, buf []byte) (_ []uint64, ours bool, _ error) {
	same, err := sameNetNamespace(pid)
	if err != nil {
		return inodes, false, err
	}
	if same && !diagDisabled.Load() {
		found, err := diagListenInodes(inodes, port, buf)
		if err == nil {
			return found, true, nil
		}
		// Whatever went wrong, /proc still has the answer.
	}
	inodes, err = procListenInodes(inodes, pid, port, buf)
	return inodes, false, err
}

// sameNetNamespace reports whether pid lives in our network namespace. When
// that cannot be told (we may not inspect pid), it answers false, so that the
// caller reads /proc/<pid>/net, which is right for every namespace.
func sameNetNamespace(pid int) (bool, error) {
	ours, ok := ourNetNamespace()
	if !ok {
		return false, nil
	}
	var theirs [64]byte // "net:[4026531840]"
	m, err := syscall.Readlink(procRoot+"/"+strconv.Itoa(pid)+"/ns/net", theirs[:])
	if errors.Is(err, fs.ErrNotExist) { // no such process, or a zombie
		return false, fmt.Errorf("network namespace of pid %d: %w", pid, err)
	}
	if err != nil {
		return false, nil
	}
	return bytes.Equal(ours, theirs[:m]), nil
}

// ourNetNamespace is the link that names svcwrap's network namespace, read
// once: svcwrap never changes it. false: it cannot be read.
var ourNetNamespace = sync.OnceValues(func() ([]byte, bool) {
	var ours [64]byte
	n, err := syscall.Readlink(procRoot+"/self/ns/net", ours[:])
	if err != nil {
		return nil, false
	}
	return ours[:n:n], true
})

// Values of the kernel's sock_diag interface, from linux/sock_diag.h,
// linux/inet_diag.h and net/tcp_states.h.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY, the request and answer type
	tcpListen        = 10 // TCP_LISTEN

	nlmsgHdrLen = 16 // struct nlmsghdr
	diagReqLen  = 56 // struct inet_diag_req_v2
	diagMsgLen  = 72 // struct inet_diag_msg

	// Offsets in struct inet_diag_msg.
	diagMsgState = 1  // idiag_state
	diagMsgSport = 4  // id.idiag_sport, big endian
	diagMsgInode = 68 // idiag_inode
)

// diagListenInodes appends to inodes the inode of every TCP socket in LISTEN
// state on port in our own network namespace, IPv4 then IPv6, from sock_diag
// dumps that the kernel filters by state and port itself.
func diagListenInodes(inodes []uint64, port int, buf []byte) ([]uint64, error) {
	for _, family := range [...]uint8{syscall.AF_INET, syscall.AF_INET6} {
		var err error
		if inodes, err = diagFamily(inodes, family, port, buf); err != nil {
			return inodes, err
		}
	}
	return inodes, nil
}

// diagFamily appends to inodes those of the TCP sockets of family in LISTEN
// state on port in our own network namespace, from one sock_diag dump. A
// failure that will not go away sets diagDisabled.
func diagFamily(inodes []uint64, family uint8, port int, buf []byte) ([]uint64, error) {
	diagSock.Lock()
	defer diagSock.Unlock()
	if diagSock.fd < 0 {
		fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.NETLINK_INET_DIAG)
		if err != nil {
			if permanentDiagError(err) {
				diagDisabled.Store(true)
			}
			return inodes, fmt.Errorf("sock_diag socket: %w", err)
		}
		diagSock.fd = fd
	}
	inodes, err := diagDump(diagSock.fd, family, port, inodes, buf)
	if err != nil {
		// What is left of the answer must not be read as the next one's.
		syscall.Close(diagSock.fd)
		diagSock.fd = -1
		if permanentDiagError(err) {
			diagDisabled.Store(true)
		}
		return inodes, fmt.Errorf("sock_diag dump of family %d: %w", family, err)
	}
	return inodes, nil
}

// diagSock is the netlink socket of the dumps, opened at the first and kept
// for the next, closed only after a failure. A ready child is checked every
// second, and a socket opened and closed each time was two of the nine
// system calls of such a check. svcwrap's network namespace never changes,
// so the socket always answers for it. -1: none open.
var diagSock = struct {
	sync.Mutex
	fd int
}{fd: -1}

// diagDump sends one dump request for the listening sockets of family on
// port over the netlink socket fd and appends their inodes to inodes.
func diagDump(fd int, family uint8, port int, inodes []uint64, buf []byte) ([]uint64, error) {
	ne := binary.NativeEndian

	// The request: struct nlmsghdr, then struct inet_diag_req_v2.
	req := buf[:nlmsgHdrLen+diagReqLen]
	clear(req)
	ne.PutUint32(req[0:], uint32(len(req)))                         // nlmsg_len
	ne.PutUint16(req[4:], sockDiagByFamily)                         // nlmsg_type
	ne.PutUint16(req[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP) // nlmsg_flags
	req[16] = family                                                // sdiag_family
	req[17] = syscall.IPPROTO_TCP                                   // sdiag_protocol
	ne.PutUint32(req[20:], 1<<tcpListen)                            // idiag_states
	binary.BigEndian.PutUint16(req[24:], uint16(port))              // id.idiag_sport
	if err := ignoringEINTR(func() error { return syscall.Sendto(fd, req, 0, nil) }); err != nil {
		return inodes, err
	}

	// The answer: messages, each a struct nlmsghdr and a struct
	// inet_diag_msg, in as many reads as it takes, until NLMSG_DONE.
	for {
		var n int
		err := ignoringEINTR(func() (err error) {
			n, err = syscall.Read(fd, buf)
			return err
		})
		if err != nil {
			return inodes, err
		}
		for msgs := buf[:n]; len(msgs) > 0; {
			if len(msgs) < nlmsgHdrLen {
				return inodes, errors.New("truncated netlink message")
			}
			size := int(ne.Uint32(msgs[0:]))
			if size < nlmsgHdrLen || size > len(msgs) {
				return inodes, errors.New("malformed netlink message")
			}
			body := msgs[nlmsgHdrLen:size]
			switch ne.Uint16(msgs[4:]) {
			case syscall.NLMSG_DONE:
				if len(body) >= 4 && int32(ne.Uint32(body)) < 0 {
					return inodes, syscall.Errno(-int32(ne.Uint32(body)))
				}
				return inodes, nil
			case syscall.NLMSG_ERROR:
				if len(body) >= 4 && int32(ne.Uint32(body)) < 0 {
					return inodes, syscall.Errno(-int32(ne.Uint32(body)))
				}
				return inodes, errors.New("unexpected netlink acknowledgement")
			case sockDiagByFamily:
				// The kernel filtered already; checking again costs nothing.
				if len(body) >= diagMsgLen && body[diagMsgState] == tcpListen &&
					int(binary.BigEndian.Uint16(body[diagMsgSport:])) == port {
					if inode := ne.Uint32(body[diagMsgInode:]); inode != 0 {
						inodes = append(inodes, uint64(inode))
					}
				}
			}
			msgs = msgs[min((size+3)&^3, len(msgs)):] // NLMSG_ALIGN
		}
	}
}

// permanentDiagError reports whether err means that sock_diag cannot work on
// this system at all, rather than that one attempt failed.
func permanentDiagError(err error) bool {
	for _, errno := range []syscall.Errno{
		syscall.ENOENT,          // no sock_diag handler for the family
		syscall.EPROTONOSUPPORT, // no NETLINK_SOCK_DIAG
		syscall.EAFNOSUPPORT,    // no netlink
		syscall.EINVAL,          // a request this kernel does not understand
		syscall.EPERM, syscall.EACCES, syscall.EOPNOTSUPP,
	} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// ignoringEINTR retries f while a signal interrupts it.
func ignoringEINTR(f func() error) error {
	for {
		if err := f(); err != syscall.EINTR {
			return err
		}
	}
}

// procListenInodes is listenInodes read from /proc/<pid>/net/tcp and tcp6,
// which describe pid's network namespace whichever it is.
func procListenInodes(inodes []uint64, pid, port int, buf []byte) ([]uint64, error) {
	netDir := procRoot + "/" + strconv.Itoa(pid) + "/net/"
	want := portHex(port)
	inodes, err := appendListenInodes(inodes, netDir+"tcp", want, buf)
	if err != nil {
		return inodes, fmt.Errorf("read tcp socket table of pid %d: %w", pid, err)
	}
	inodes, err = appendListenInodes(inodes, netDir+"tcp6", want, buf)
	if err != nil && !errors.Is(err, fs.ErrNotExist) { // no tcp6: IPv6 is disabled
		return inodes, fmt.Errorf("read tcp6 socket table of pid %d: %w", pid, err)
	}
	return inodes, nil
}

// portHex is port as the kernel prints it in /proc/net/tcp ("%04X"), so that
// lines can be matched without parsing numbers.
func portHex(port int) [4]byte {
	const digits = "0123456789ABCDEF"
	return [4]byte{
		digits[port>>12&0xF],
		digits[port>>8&0xF],
		digits[port>>4&0xF],
		digits[port&0xF],
	}
}

// appendListenInodes appends to inodes the inode of every socket in LISTEN
// state on the port whose hex form is want, read from the socket table at path
// (in the format of /proc/net/tcp or tcp6). buf is scratch space; lines are
// processed as they arrive so the table's size does not matter.
func appendListenInodes(inodes []uint64, path string, want [4]byte, buf []byte) ([]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return inodes, err
	}
	defer f.Close()

	start, end := 0, 0 // buf[start:end] holds bytes not yet processed
	for {
		n, err := f.Read(buf[end:])
		end += n
		for {
			i := bytes.IndexByte(buf[start:end], '\n')
			if i < 0 {
				break
			}
			if inode := listenInode(buf[start:start+i], want); inode != 0 {
				inodes = append(inodes, inode)
			}
			start += i + 1
		}
		if err == io.EOF {
			if inode := listenInode(buf[start:end], want); inode != 0 {
				inodes = append(inodes, inode)
			}
			return inodes, nil
		}
		if err != nil {
			return inodes, err
		}
		// Keep the incomplete last line, at the front of buf.
		end = copy(buf, buf[start:end])
		start = 0
		if end == len(buf) {
			return inodes, fmt.Errorf("%s: line longer than %d bytes", path, len(buf))
		}
	}
}

// listenInode returns the inode of the socket described by one line of a
// socket table if it is in LISTEN state on the port want, and 0 otherwise
// (also for the header line). A line reads:
//
//	sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
//	 0: 0100007F:270F 00000000:0000 0A 00000000:00000000 00:00000000 00000000 1000 0 123456 ...
//
// IPv6 tables have 32 hex digits of address instead of 8.
func listenInode(line []byte, want [4]byte) uint64 {
	const (
		localField = 1
		stateField = 3
		inodeField = 9
		listen     = "0A" // TCP_LISTEN
	)
	for i := 0; ; i++ {
		var field []byte
		field, line = nextField(line)
		switch {
		case field == nil:
			return 0
		case i == localField:
			// ADDRESS:PORT, the port in four hex digits.
			n := len(field)
			if n < 5 || field[n-5] != ':' || [4]byte(field[n-4:]) != want {
				return 0
			}
		case i == stateField:
			if string(field) != listen {
				return 0
			}
		case i == inodeField:
			inode, err := strconv.ParseUint(string(field), 10, 64)
			if err != nil {
				return 0
			}
			return inode
		}
	}
}

// nextField splits the first space-separated field off b. It returns a nil
// field when b holds no more fields.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && b[i] == ' ' {
		i++
	}
	if i == len(b) {
		return nil, nil
	}
	j := i
	for j < len(b) && b[j] != ' ' {
		j++
	}
	return b[i:j], b[j:]
}
