<?php
/**
 * Readers' tokens: HS256 JWTs the app verifies with the same AUTH_SECRET.
 *
 * Plain PHP (hash_hmac, json_encode, base64): no Composer, no WordPress function, so that
 * tests/contract.php checks it byte for byte against the shared token vectors.
 *
 * @package Realtime
 */

/** Seconds a reader's token lives: short, the page asks for a new one before it ends. */
const REALTIME_TOKEN_SECONDS = 300;

/**
 * Unpadded base64url, as JWTs are encoded.
 *
 * @param string $data Bytes.
 */
function realtime_base64url( string $data ): string {
	return rtrim( strtr( base64_encode( $data ), '+/', '-_' ), '=' );
}

/**
 * An HS256 JWT of $claims, signed with the first of the secrets in $secrets.
 *
 * The header is exactly {"alg":"HS256","typ":"JWT"}; the claims are compact JSON in the order
 * given, slashes unescaped, other characters as json_encode escapes them (non-ASCII as \uXXXX).
 *
 * @param string $secrets AUTH_SECRET: one or more secrets separated by spaces; the first signs.
 * @param array  $claims  sub (string), exp (int), then iat, channels, publish as wanted.
 * @throws InvalidArgumentException When there is no secret, or the claims cannot be JSON.
 */
function realtime_mint_token( string $secrets, array $claims ): string {
	$keys = preg_split( '/\s+/', trim( $secrets ), -1, PREG_SPLIT_NO_EMPTY );
	if ( empty( $keys ) ) {
		throw new InvalidArgumentException( 'AUTH_SECRET is not set' );
	}
	$payload = json_encode( $claims, JSON_UNESCAPED_SLASHES ); // phpcs:ignore WordPress.WP.AlternativeFunctions.json_encode_json_encode -- the exact bytes the vectors hold.
	if ( false === $payload ) {
		throw new InvalidArgumentException( 'the claims are not JSON: ' . json_last_error_msg() );
	}
	$signed = realtime_base64url( '{"alg":"HS256","typ":"JWT"}' ) . '.' . realtime_base64url( $payload );
	return $signed . '.' . realtime_base64url( hash_hmac( 'sha256', $signed, $keys[0], true ) );
}

/**
 * A reader's claims: who, until when, and the channels the token opens.
 *
 * @param string   $subject  "user:<ID>" or "anonymous".
 * @param string[] $channels Exact channel names (or prefixes ending in *).
 * @param int      $now      Seconds since the epoch.
 * @return array{sub: string, exp: int, iat: int, channels: string[]}
 */
function realtime_reader_claims( string $subject, array $channels, int $now ): array {
	return array(
		'sub'      => $subject,
		'exp'      => $now + REALTIME_TOKEN_SECONDS,
		'iat'      => $now,
		'channels' => array_values( $channels ),
	);
}
