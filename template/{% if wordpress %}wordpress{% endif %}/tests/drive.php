<?php
/**
 * Drives a real WordPress from PHP CLI for tests/test_wordpress.py: one command, one JSON line.
 *
 * usage: php drive.php WP_ROOT COMMAND [ARGS...]
 *   next-post-id                      the ID the next post will get
 *   insert-post TITLE [STATUS]        {"id", "ms"}: wp_insert_post and how long it took
 *   update-post ID TITLE [STATUS]     {"ms"}
 *   comments POST_ID COUNT [GAP_MS]   {"ids", "ms", "t0"}: COUNT approved comments, each call
 *                                     timed (t0: when it began, seconds since the epoch), GAP_MS
 *                                     apart (benchmarks/wordpress.py)
 *   liveblog insert|update|delete POST_ID ENTRY_ID CONTENT
 *                                     a test double of the Liveblog plugin: its entry (a comment
 *                                     of type liveblog) and its hook, as Liveblog fires it
 *   drain                             {"sent", "waiting", "next"}: the action realtime_drain_outbox
 *   outbox                            {"waiting", "next"}
 *   last-ids POST_ID                  {channel: data-last-id} as the page renders them
 *   page POST_ID                      {"content", "scripts"}: the post's page as a reader gets it
 *                                     (its content with the live regions, and the page script)
 *   token POST_ID [USER_ID [NONCE]]   the token route's answer, with a valid nonce (or NONCE)
 *   rest ROUTE QUERY_JSON             {"status", "body"}: GET ROUTE of the REST API, anonymously
 *
 * The plugin's settings come from the environment (REALTIME_URL, PUBLISH_TOKEN, AUTH_SECRET,
 * REALTIME_TIMEOUT). WordPress exits 0 even when it fails: the caller reads the JSON line.
 *
 * @package Realtime
 */

if ( PHP_SAPI !== 'cli' ) {
	exit( 1 );
}
require $argv[1] . '/wp-load.php';

/**
 * Milliseconds since $start.
 *
 * @param float $start microtime(true) at the start.
 */
function drive_ms( float $start ): float {
	return round( ( microtime( true ) - $start ) * 1000, 2 );
}

/**
 * The outbox's state.
 */
function drive_outbox(): array {
	global $wpdb;
	$table = realtime_outbox_table();
	$next  = wp_next_scheduled( 'realtime_drain_outbox' );
	return array(
		'waiting' => (int) $wpdb->get_var( "SELECT COUNT(*) FROM {$table}" ), // phpcs:ignore WordPress.DB
		'next'    => false === $next ? null : $next - time(),
	);
}

$args    = array_slice( $argv, 3 );
$command = $argv[2];
switch ( $command ) {
	case 'next-post-id':
		global $wpdb;
		$out = array( 'id' => (int) $wpdb->get_var( $wpdb->prepare( 'SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s', DB_NAME, $wpdb->posts ) ) );
		break;
	case 'insert-post':
		$start = microtime( true );
		$id    = wp_insert_post(
			array(
				'post_title'   => $args[0],
				'post_content' => 'Hello',
				'post_status'  => $args[1] ?? 'publish',
			)
		);
		$out   = array(
			'id' => $id,
			'ms' => drive_ms( $start ),
		);
		break;
	case 'update-post':
		$start  = microtime( true );
		$update = array(
			'ID'         => (int) $args[0],
			'post_title' => $args[1],
		);
		if ( isset( $args[2] ) ) {
			$update['post_status'] = $args[2];
		}
		wp_update_post( $update );
		$out = array( 'ms' => drive_ms( $start ) );
		break;
	case 'comments':
		$out = array(
			'ids' => array(),
			'ms'  => array(),
			't0'  => array(),
		);
		for ( $i = 1; $i <= (int) $args[1]; $i++ ) {
			if ( $i > 1 && isset( $args[2] ) ) {
				usleep( 1000 * (int) $args[2] );
			}
			$start        = microtime( true );
			$out['t0'][]  = $start;
			$out['ids'][] = wp_insert_comment(
				array(
					'comment_post_ID'      => (int) $args[0],
					'comment_author'       => 'Reader',
					'comment_author_email' => 'reader@example.com',
					'comment_content'      => "Comment $i",
					'comment_approved'     => 1,
				)
			);
			$out['ms'][]  = drive_ms( $start );
		}
		break;
	case 'liveblog':
		list( $action, $post_id, $entry_id, $content ) = $args;
		if ( 'delete' !== $action ) {
			$entry_id = wp_insert_comment(
				array(
					'comment_post_ID'  => (int) $post_id,
					'comment_content'  => $content,
					'comment_type'     => 'liveblog',
					'comment_approved' => 'liveblog',
				)
			);
			if ( 'update' === $action ) {
				add_comment_meta( $entry_id, 'liveblog_replaces', (int) $args[2] );
			}
		}
		do_action( "liveblog_{$action}_entry", (int) $entry_id, (int) $post_id );
		$out = array( 'id' => (int) $entry_id );
		break;
	case 'drain':
		$out = array( 'sent' => realtime_drain_outbox() ) + drive_outbox();
		break;
	case 'outbox':
		$out = drive_outbox();
		break;
	case 'last-ids':
		$post = get_post( (int) $args[0] );
		$out  = array();
		foreach ( realtime_post_channels( $post ) as $channel ) {
			$out[ $channel ] = realtime_last_id( $post->ID, $channel );
		}
		break;
	case 'page':
		$GLOBALS['wp']->query_vars = array( 'p' => (int) $args[0] );
		$GLOBALS['wp']->query_posts(); // the main query, as for a request of the post's page
		the_post();
		$content = apply_filters( 'the_content', get_the_content() );
		do_action( 'wp_enqueue_scripts' );
		ob_start();
		wp_print_scripts( 'realtime-live' );
		$out = array(
			'content' => $content,
			'scripts' => ob_get_clean(),
		);
		break;
	case 'rest':
		$request = new WP_REST_Request( 'GET', $args[0] );
		$request->set_query_params( json_decode( $args[1], true ) );
		$response = rest_do_request( $request );
		$out      = array(
			'status' => $response->get_status(),
			'body'   => rest_get_server()->response_to_data( $response, false ),
		);
		break;
	case 'token':
		wp_set_current_user( (int) ( $args[1] ?? 0 ) );
		$request = new WP_REST_Request( 'GET', '/realtime/v1/token' );
		$request->set_query_params( array( 'post' => (int) $args[0] ) );
		$request->set_header( 'X-WP-Nonce', $args[2] ?? wp_create_nonce( 'wp_rest' ) );
		$response = rest_do_request( $request );
		$out      = array(
			'status' => $response->get_status(),
			'body'   => $response->get_data(),
		);
		break;
	default:
		fwrite( STDERR, "unknown command $command\n" );
		exit( 2 );
}
echo 'RESULT ' . wp_json_encode( $out ) . "\n";
