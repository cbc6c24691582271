package replogwatermill_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The suite's multiplier (several subscribers behind one, in
// TestConcurrentSubscribe and TestPublishSubscribeInOrder) forwards
// messages to a channel that nobody reads once the test is done: its
// goroutines stay blocked, whatever the subscribers do.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill/internal/subscriber.(*multiplier).Subscribe.func2"),
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill/internal/subscriber.(*multiplier).Subscribe.func3"),
	)
}
