// Command supportdesk is Switchboard's reference live-chat support server.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "supportdesk: the reference server is being assembled (issue #10); the components under gateway/, router/, session/, queue/, fanout/ and observe/ are usable on their own.")
	os.Exit(1)
}
