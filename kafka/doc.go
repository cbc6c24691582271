// Package replogkafka serves a [replog.Log] to Kafka clients over Kafka's
// wire protocol, so that programs written against any Kafka client library
// (franz-go, sarama, librdkafka and the tools built on it) can produce to
// and consume from an embedded replog node.
//
// # Usage
//
//	l, err := replog.Open(dir, nil)
//	srv, err := replogkafka.Listen(l, "127.0.0.1:9092", nil)
//	defer srv.Close()
//
// replog opens no network port by itself: the listener is the one it opens
// when asked. Requests are decoded with franz-go's kmsg, the maintained Go
// model of Kafka's protocol.
//
// # What a connection gets
//
// Each connection has one goroutine reading requests and one writing the
// responses, in request order. A frame is checked against
// [Options.MaxRequestBytes] (1 MiB for every request but Produce) before
// anything is allocated for it; a frame that is too large, does not decode,
// or names an API or version not served closes its connection (as Kafka
// does), and never disturbs other connections. An ApiVersions request of a
// version not served gets Kafka's UNSUPPORTED_VERSION answer (KIP-511) so
// the client can retry with one that is.
package replogkafka
