<?php
/**
 * The outbox: events the app did not take, in a table of their own, sent again by WP-Cron.
 *
 * Bounded (REALTIME_OUTBOX_MAX events; past it new events are dropped and counted, with an admin
 * notice), ordered (the drain stops at the first event the app does not take, so nothing
 * overtakes it), coalesced (a post's successive states while waiting become its latest), and
 * exactly once (each event keeps its Idempotency-Key, so an event whose answer was lost is not
 * broadcast twice). The drain is the action realtime_drain_outbox, scheduled with backoff; a site
 * may also run it with WP-CLI: wp cron event run realtime_drain_outbox.
 *
 * @package Realtime
 */

defined( 'ABSPATH' ) || exit;

/** Events the outbox holds at most. */
const REALTIME_OUTBOX_MAX = 10000;
/** Version of the outbox table's schema. */
const REALTIME_OUTBOX_SCHEMA = '1';
/** Backoff of the drain after a failure: base and cap, in seconds (with jitter). */
const REALTIME_DRAIN_BASE = 10;
const REALTIME_DRAIN_CAP  = 600;
/** Seconds one drain may take (WP-Cron runs it with others), and events it reads at once. */
const REALTIME_DRAIN_SECONDS = 20;
const REALTIME_DRAIN_BATCH   = 100;

/**
 * The outbox table's name.
 */
function realtime_outbox_table(): string {
	global $wpdb;
	return $wpdb->prefix . 'realtime_outbox';
}

/**
 * Create the outbox table once (must-use plugins have no activation).
 */
function realtime_outbox_install(): void {
	if ( REALTIME_OUTBOX_SCHEMA === get_option( 'realtime_outbox_schema' ) ) {
		return;
	}
	global $wpdb;
	$table = realtime_outbox_table();
	// phpcs:ignore WordPress.DB.DirectDatabaseQuery -- a table of the plugin's own; the name is not input.
	$wpdb->query(
		"CREATE TABLE IF NOT EXISTS {$table} (
			id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
			channel varchar(191) NOT NULL,
			coalesce_key varchar(191) DEFAULT NULL,
			idempotency_key varchar(64) NOT NULL,
			post_id bigint(20) unsigned NOT NULL,
			data longtext NOT NULL,
			PRIMARY KEY  (id),
			KEY coalesce_key (coalesce_key)
		) {$wpdb->get_charset_collate()}"
	);
	update_option( 'realtime_outbox_schema', REALTIME_OUTBOX_SCHEMA, true );
}
add_action( 'init', 'realtime_outbox_install' );

/**
 * Whether no event waits.
 */
function realtime_outbox_is_empty(): bool {
	global $wpdb;
	$table = realtime_outbox_table();
	// phpcs:ignore WordPress.DB.DirectDatabaseQuery, WordPress.DB.PreparedSQL.InterpolatedNotPrepared -- must be fresh.
	return null === $wpdb->get_var( "SELECT id FROM {$table} LIMIT 1" );
}

/**
 * Put an event in the outbox (or merge it into the waiting state of the same post), and make
 * sure a drain is scheduled.
 *
 * @param array $event channel, key, data, post_id, coalesce.
 */
function realtime_outbox_add( array $event ): void {
	global $wpdb;
	realtime_outbox_install();
	$table = realtime_outbox_table();
	$data  = wp_json_encode( $event['data'] );
	$saved = 0;
	if ( null !== $event['coalesce'] ) {
		// The latest state replaces the waiting one, in its place, under a new key: the old key
		// may have reached the app already, and the new state must not be taken for it.
		// phpcs:ignore WordPress.DB.DirectDatabaseQuery
		$saved = (int) $wpdb->update(
			$table,
			array(
				'channel'         => $event['channel'],
				'idempotency_key' => $event['key'],
				'data'            => $data,
			),
			array( 'coalesce_key' => $event['coalesce'] )
		);
	}
	if ( 0 === $saved ) {
		// phpcs:ignore WordPress.DB.DirectDatabaseQuery, WordPress.DB.PreparedSQL.InterpolatedNotPrepared
		$count = (int) $wpdb->get_var( "SELECT COUNT(*) FROM {$table}" );
		if ( $count >= REALTIME_OUTBOX_MAX ) {
			update_option( 'realtime_outbox_dropped', (int) get_option( 'realtime_outbox_dropped', 0 ) + 1, false );
			// phpcs:ignore WordPress.PHP.DevelopmentFunctions.error_log_error_log
			error_log( sprintf( 'realtime: the outbox is full (%d events); dropped an event of %s', $count, $event['channel'] ) );
			return;
		}
		// phpcs:ignore WordPress.DB.DirectDatabaseQuery
		$wpdb->insert(
			$table,
			array(
				'channel'         => $event['channel'],
				'coalesce_key'    => $event['coalesce'],
				'idempotency_key' => $event['key'],
				'post_id'         => $event['post_id'],
				'data'            => $data,
			)
		);
	}
	if ( false === wp_next_scheduled( 'realtime_drain_outbox' ) ) {
		wp_schedule_single_event( time() + REALTIME_DRAIN_BASE, 'realtime_drain_outbox' );
	}
}

/**
 * Send the waiting events, oldest first, until one is not taken; then schedule the next drain
 * with backoff (capped, jittered), or none once the outbox is empty.
 *
 * One drain at a time (a lock in the options table, stale after a minute). Returns the number of
 * events the app took.
 */
function realtime_drain_outbox(): int {
	global $wpdb;
	if ( null === realtime_app() || ! realtime_drain_lock() ) {
		return 0;
	}
	$table    = realtime_outbox_table();
	$deadline = microtime( true ) + REALTIME_DRAIN_SECONDS;
	$sent     = 0;
	$failed   = false;
	try {
		while ( ! $failed && microtime( true ) < $deadline ) {
			// phpcs:ignore WordPress.DB.DirectDatabaseQuery, WordPress.DB.PreparedSQL.InterpolatedNotPrepared
			$rows = $wpdb->get_results( $wpdb->prepare( "SELECT * FROM {$table} ORDER BY id LIMIT %d", REALTIME_DRAIN_BATCH ), ARRAY_A );
			if ( empty( $rows ) ) {
				break;
			}
			foreach ( $rows as $row ) {
				$event  = array(
					'channel' => $row['channel'],
					'key'     => $row['idempotency_key'],
					'data'    => json_decode( $row['data'], true ),
					'post_id' => (int) $row['post_id'],
				);
				$result = realtime_send( $event );
				if ( 'retry' === $result ) {
					$failed = true; // nothing overtakes it
					break;
				}
				// Deleted only if still this key: a newer state merged meanwhile is sent next time.
				// phpcs:ignore WordPress.DB.DirectDatabaseQuery
				$wpdb->delete(
					$table,
					array(
						'id'              => $row['id'],
						'idempotency_key' => $row['idempotency_key'],
					)
				);
				$sent += 'sent' === $result ? 1 : 0;
				if ( microtime( true ) >= $deadline ) {
					break;
				}
			}
		}
	} finally {
		delete_option( 'realtime_drain_lock' );
	}
	realtime_schedule_drain( $failed );
	return $sent;
}
add_action( 'realtime_drain_outbox', 'realtime_drain_outbox' );

/**
 * Take the drain's lock; false when another drain holds it (for less than a minute).
 */
function realtime_drain_lock(): bool {
	if ( add_option( 'realtime_drain_lock', time(), '', false ) ) {
		return true;
	}
	if ( (int) get_option( 'realtime_drain_lock' ) < time() - 60 ) {
		delete_option( 'realtime_drain_lock' );
		return add_option( 'realtime_drain_lock', time(), '', false );
	}
	return false;
}

/**
 * Schedule the next drain: after a failure with backoff, at once while events wait, else none.
 *
 * @param bool $failed Whether the app did not take an event.
 */
function realtime_schedule_drain( bool $failed ): void {
	wp_clear_scheduled_hook( 'realtime_drain_outbox' );
	if ( $failed ) {
		$failures = (int) get_option( 'realtime_drain_failures', 0 ) + 1;
		update_option( 'realtime_drain_failures', $failures, false );
		$delay = (int) min( REALTIME_DRAIN_CAP, REALTIME_DRAIN_BASE * 2 ** min( $failures - 1, 10 ) );
		wp_schedule_single_event( time() + wp_rand( (int) ( $delay / 2 ), $delay ), 'realtime_drain_outbox' );
		return;
	}
	update_option( 'realtime_drain_failures', 0, false );
	if ( ! realtime_outbox_is_empty() ) {
		wp_schedule_single_event( time(), 'realtime_drain_outbox' );
	}
}

/**
 * Tell administrators about events dropped because the outbox was full.
 */
function realtime_outbox_notice(): void {
	$dropped = (int) get_option( 'realtime_outbox_dropped', 0 );
	if ( 0 === $dropped || ! current_user_can( 'manage_options' ) ) {
		return;
	}
	printf(
		'<div class="notice notice-error"><p>%s</p></div>',
		esc_html(
			sprintf(
				/* translators: %d: number of events. */
				__( 'Realtime: the outbox was full and %d events were dropped. Is the real-time app reachable at REALTIME_URL?', 'realtime' ),
				$dropped
			)
		)
	);
}
add_action( 'admin_notices', 'realtime_outbox_notice' );
