package replogwatermill

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/replog/replog"
)

// UUIDHeader is the record header that carries a message's UUID. It is
// reserved: a message whose metadata has this key is refused with
// [ErrReservedMetadata].
const UUIDHeader = "_watermill_message_uuid"

// ErrReservedMetadata: a message to publish has metadata under
// [UUIDHeader]; nothing of its Publish call after it was published.
var ErrReservedMetadata = errors.New("replogwatermill: metadata key reserved for the message UUID")

// toRecord maps a message to a record: payload to value, UUID to the
// [UUIDHeader] header, then each metadata entry to a header of the same
// key. Metadata is a map, so headers after the UUID come in no fixed
// order.
func toRecord(msg *message.Message, key []byte) (replog.Message[[]byte], error) {
	if _, ok := msg.Metadata[UUIDHeader]; ok {
		return replog.Message[[]byte]{}, fmt.Errorf("%w: message %s", ErrReservedMetadata, msg.UUID)
	}
	headers := make([]replog.Header, 0, 1+len(msg.Metadata))
	headers = append(headers, replog.Header{Key: UUIDHeader, Value: []byte(msg.UUID)})
	for k, v := range msg.Metadata {
		headers = append(headers, replog.Header{Key: k, Value: []byte(v)})
	}
	return replog.Message[[]byte]{Key: key, Value: msg.Payload, Headers: headers}, nil
}

// toMessage maps a record back to a message. A record without the UUID
// header (written by something other than a [Publisher]) gets the UUID
// "topic/partition/offset", the same on every delivery; a repeated header
// key keeps its last value. A tombstone has a nil payload.
func toMessage(rec replog.Record[[]byte]) *message.Message {
	uuid := ""
	md := make(message.Metadata, len(rec.Headers))
	for _, h := range rec.Headers {
		if h.Key == UUIDHeader {
			uuid = string(h.Value)
			continue
		}
		md[h.Key] = string(h.Value)
	}
	if uuid == "" {
		uuid = rec.Topic + "/" + strconv.Itoa(rec.Partition) + "/" + strconv.FormatInt(rec.Offset, 10)
	}
	msg := message.NewMessage(uuid, rec.Value)
	msg.Metadata = md
	return msg
}
