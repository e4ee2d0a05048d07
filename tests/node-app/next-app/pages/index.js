// The smallest Next.js page: rendered per request, so it shows who served it.
export default function Home({ pid }) {
  return <p>pid={pid}</p>;
}

export function getServerSideProps() {
  return { props: { pid: process.pid } };
}
