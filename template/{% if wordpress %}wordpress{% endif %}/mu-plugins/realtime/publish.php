<?php
/**
 * Publishing: one POST /_publish per event, never a wait longer than REALTIME_TIMEOUT.
 *
 * @package Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Publish $payload on $channel, as it happens, or later through the outbox.
 *
 * The filter realtime_payload may change the payload or drop it (null or false). Nothing is sent
 * without configuration. When the outbox holds events, this one goes behind them (order is kept);
 * else it is sent at once, once, within REALTIME_TIMEOUT, and goes to the outbox if the app does
 * not take it. Never throws, never retries inside the request.
 *
 * @param string      $channel  The channel (channels.php).
 * @param array       $payload  The message (channels.php).
 * @param int         $post_id  The post whose page shows it (its data-last-id is kept).
 * @param string|null $coalesce Events with the same key may be merged into the latest, while waiting.
 * @param mixed       $subject  The post, comment or entry, for the filter.
 */
function realtime_publish( string $channel, array $payload, int $post_id, ?string $coalesce = null, $subject = null ): void {
	/**
	 * Filters a payload before it is published; return null or false to publish nothing.
	 *
	 * @param array  $payload The message.
	 * @param string $channel Its channel.
	 * @param mixed  $subject The WP_Post or WP_Comment it is about.
	 */
	$payload = apply_filters( 'realtime_payload', $payload, $channel, $subject );
	if ( ! is_array( $payload ) || null === realtime_app() ) {
		return;
	}
	$event = array(
		'channel'  => $channel,
		'key'      => realtime_new_key(),
		'data'     => $payload,
		'post_id'  => $post_id,
		'coalesce' => $coalesce,
	);
	if ( ! realtime_outbox_is_empty() || 'sent' !== realtime_send( $event ) ) {
		realtime_outbox_add( $event );
	}
}

/**
 * A fresh idempotency key: the app broadcasts each key once, however often it is sent.
 */
function realtime_new_key(): string {
	return 'wp-' . str_replace( '-', '', wp_generate_uuid4() );
}

/**
 * Send one event to the app's POST /_publish, once, within REALTIME_TIMEOUT.
 *
 * @param array $event channel, key, data, post_id.
 * @return string sent (the app took it, now or before: the key says so), retry (no answer, 5xx,
 *                409 or 429: later, from the outbox) or drop (refused for good: logged).
 */
function realtime_send( array $event ): string {
	$app = realtime_app();
	if ( null === $app ) {
		return 'retry';
	}
	$response = wp_remote_post(
		$app['url'] . '/_publish?channel=' . rawurlencode( $event['channel'] ),
		array(
			// The editor's save never waits longer on the app than this, and never retries.
			'timeout'     => realtime_timeout(),
			'redirection' => 0,
			'headers'     => array(
				'Authorization'   => 'Bearer ' . $app['token'],
				'Content-Type'    => 'application/json',
				'Idempotency-Key' => $event['key'],
			),
			'body'        => wp_json_encode( $event['data'] ),
		)
	);
	if ( is_wp_error( $response ) ) {
		return 'retry';
	}
	$status = (int) wp_remote_retrieve_response_code( $response );
	if ( $status >= 200 && $status < 300 ) {
		$answer = json_decode( wp_remote_retrieve_body( $response ), true );
		if ( is_array( $answer ) && isset( $answer['id'] ) && is_int( $answer['id'] ) ) {
			realtime_remember_last_id( (int) $event['post_id'], $event['channel'], $answer['id'] );
		}
		return 'sent';
	}
	if ( $status >= 500 || 409 === $status || 429 === $status ) {
		return 'retry';
	}
	// phpcs:ignore WordPress.PHP.DevelopmentFunctions.error_log_error_log -- the site's log is where this belongs.
	error_log( sprintf( 'realtime: the app refused a publish on %s with %d; dropped', $event['channel'], $status ) );
	return 'drop';
}

/**
 * Keep the id of a channel's newest message, for the cached page's data-last-id.
 *
 * @param int    $post_id The post.
 * @param string $channel Its channel.
 * @param int    $id      The id /_publish answered.
 */
function realtime_remember_last_id( int $post_id, string $channel, int $id ): void {
	$key = '_realtime_last_id_' . $channel;
	if ( $id > (int) get_post_meta( $post_id, $key, true ) ) {
		update_post_meta( $post_id, $key, $id );
	}
}

/**
 * The id of a channel's newest message this site published, or null.
 *
 * @param int    $post_id The post.
 * @param string $channel Its channel.
 */
function realtime_last_id( int $post_id, string $channel ): ?int {
	$id = (int) get_post_meta( $post_id, '_realtime_last_id_' . $channel, true );
	return $id > 0 ? $id : null;
}
