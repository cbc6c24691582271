package replog_test

import (
	"os"
	"os/exec"
	"testing"
)

// childEnv, set in a process's environment, makes the test binary act as
// the child process of the test that started it (see childCmd).
const childEnv = "REPLOG_TEST_CHILD"

// childCmd runs one test of this binary in a new process, with env added
// to the environment. The test tells the two roles apart by childEnv.
func childCmd(t *testing.T, test string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	return cmd
}
