<?php
/**
 * The plugin's contract with the app, in plain PHP (Debian's php-cli, no Composer, no WordPress):
 * tokens against the shared token vectors, channels and payloads against the WordPress vectors.
 *
 * usage: php wordpress/tests/contract.php [PROJECT_ROOT]
 * Prints "MINTED <json>" (tokens for tests/test_wordpress.py to verify with PyJWT and the app),
 * "MINTS <n>" (the shared vectors' mints checked), one "FAIL ..." line per failure, and
 * "OK <checks>" at the end; exits 1 on any failure, or when a vectors file is missing.
 *
 * @package Realtime
 */

require __DIR__ . '/../mu-plugins/realtime/token.php';
require __DIR__ . '/../mu-plugins/realtime/channels.php';

$root   = $argv[1] ?? __DIR__ . '/../..';
$checks = 0;
$failed = 0;

/**
 * Count a check; say what failed.
 *
 * @param bool   $ok   Whether it holds.
 * @param string $what What it is.
 */
function check( bool $ok, string $what ): void {
	global $checks, $failed;
	++$checks;
	if ( ! $ok ) {
		++$failed;
		echo "FAIL $what\n";
	}
}

/**
 * Decode a JSON file of the project's tests; exit 1 if it is missing or not JSON.
 *
 * @param string $path Its path.
 */
function vectors( string $path ): array {
	if ( ! is_file( $path ) ) {
		echo "FAIL $path is missing\n";
		exit( 1 );
	}
	$data = json_decode( (string) file_get_contents( $path ), true );
	if ( ! is_array( $data ) ) {
		echo "FAIL $path is not JSON\n";
		exit( 1 );
	}
	return $data;
}

// Tokens: our own properties, then the shared vectors' canonical mints, byte for byte.
$claims = array(
	'sub'      => 'user:7',
	'exp'      => 2000000300,
	'iat'      => 2000000000,
	'channels' => array( 'private:post:7', 'comments:*' ),
);
$secret = 'contract-secret-of-at-least-32-characters';
$token  = realtime_mint_token( $secret . ' an-older-secret-still-accepted-by-the-app', $claims );
list( $h, $p, $s ) = explode( '.', $token );
check( '{"alg":"HS256","typ":"JWT"}' === base64_decode( strtr( $h, '-_', '+/' ) ), 'the header is exactly {"alg":"HS256","typ":"JWT"}' );
check( '{"sub":"user:7","exp":2000000300,"iat":2000000000,"channels":["private:post:7","comments:*"]}' === base64_decode( strtr( $p, '-_', '+/' ) ), 'the claims are compact, in order, slashes and all' );
check( 1 !== preg_match( '/[=+\/]/', $token ), 'base64url without padding' );
check( hash_equals( realtime_base64url( hash_hmac( 'sha256', "$h.$p", $secret, true ) ), $s ), 'the first secret signs' );
check( realtime_mint_token( $secret, $claims ) === $token, 'the other secrets do not change the token' );
$unicode = realtime_mint_token( $secret, array( 'sub' => 'Zoë/1', 'exp' => 2000000300 ) );
check( false !== strpos( base64_decode( strtr( explode( '.', $unicode )[1], '-_', '+/' ) ), '"Zo\u00eb/1"' ), 'non-ASCII is escaped, slashes are not' );
$reader = realtime_reader_claims( 'anonymous', array( 'post:42' ), 1000 );
check( array( 'sub', 'exp', 'iat', 'channels' ) === array_keys( $reader ) && 1300 === $reader['exp'], 'a reader token lives five minutes' );
try {
	realtime_mint_token( '  ', $claims );
	check( false, 'no secret is refused' );
} catch ( InvalidArgumentException $e ) {
	check( true, 'no secret is refused' );
}
echo 'MINTED ' . json_encode(
	array(
		'secret' => $secret,
		'tokens' => array( $token, $unicode ),
		'claims' => array( $claims, array( 'sub' => 'Zoë/1', 'exp' => 2000000300 ) ),
	),
	JSON_UNESCAPED_SLASHES
) . "\n";

// The shared vectors' canonical mints, byte for byte: the same claims (in the same order) and
// secret give the very token tests/test_tokens.py checks the app's mint_token and verifier against.
$mints = 0;
foreach ( vectors( "$root/tests/token-vectors.json" )['vectors'] as $vector ) {
	if ( isset( $vector['mint'] ) ) {
		++$mints;
		$minted = realtime_mint_token( $vector['mint']['secret'], $vector['mint']['claims'] );
		check( $minted === $vector['token'], "the mint of {$vector['name']}: $minted, not {$vector['token']}" );
	}
}
check( $mints > 0, 'tests/token-vectors.json has mints' );
echo "MINTS $mints\n";

// Channels and payloads: exactly the vectors the app's tests read.
$wordpress = vectors( "$root/tests/wordpress-vectors.json" );
foreach ( $wordpress['channels'] as $vector ) {
	check( realtime_channel( $vector['kind'], $vector['post'], $vector['public'] ) === $vector['channel'], "channel {$vector['channel']}" );
}
$builders = array(
	'post'     => 'realtime_post_payload',
	'comment'  => 'realtime_comment_payload',
	'liveblog' => 'realtime_liveblog_payload',
);
foreach ( $wordpress['payloads'] as $vector ) {
	$payload = call_user_func_array( $builders[ $vector['builder'] ], $vector['args'] );
	check( $payload === $vector['payload'], "payload of {$vector['builder']}: " . json_encode( $payload ) );
}

echo ( $failed ? 'FAILED' : 'OK' ) . " $checks checks, $failed failed\n";
exit( $failed ? 1 : 0 );
