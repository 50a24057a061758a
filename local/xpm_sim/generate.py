"""Deterministic, realistic practices for tests, the demo and the benchmark.

Everything comes from one ``random.Random(seed)`` (uuids included), so a seed always yields the same
practice. Data problems are planted on purpose, one per affected record, and listed on
``Practice.problems`` so callers know exactly which records must fail or warn.
"""

from __future__ import annotations

import random
import re
import uuid as uuidlib
from datetime import UTC, datetime, timedelta

from local.xpm_sim.model import Practice, SimClient, SimContact, SimGroup, SimStaff

# Modified times are fixed in the past (not "now") so that a seed gives equal practices on any day.
GENERATED_AT = datetime(2025, 1, 1, tzinfo=UTC)

STAFF_PROBLEMS: tuple[str, ...] = ("one_word_staff_name", "staff_missing_email")
CLIENT_PROBLEMS: tuple[str, ...] = (
    "missing_partner",
    "partner_not_in_active",
    "duplicate_code",
    "archived",
    "missing_business_structure",
    "custom_business_structure",
    "individual_missing_name",
    "invalid_abn",
)
PROBLEM_KINDS: tuple[str, ...] = STAFF_PROBLEMS + CLIENT_PROBLEMS

STANDARD_STRUCTURES: tuple[str, ...] = (
    "Individual",
    "Sole Trader",
    "Partnership",
    "Company",
    "Trust",
    "Family Trust",
    "Superannuation Fund",
    "Self Managed Superannuation Fund",
    "SMSF",
)
# None of these end in "Trust" or name a super fund: each must map to "other" with a warning.
CUSTOM_STRUCTURES: tuple[str, ...] = ("Charity", "Incorporated Association", "Deceased Estate", "Club")

FIRST_NAMES: tuple[str, ...] = (
    "Olivia", "Noah", "Charlotte", "Oliver", "Amelia", "William", "Isla", "Jack", "Mia", "Henry",
    "Ava", "Leo", "Grace", "Lucas", "Chloe", "Thomas", "Zoe", "James", "Ruby", "Ethan", "Sophie",
    "Liam", "Harper", "Samuel", "Ella", "Mason", "Matilda", "Lachlan", "Evie", "Hugo", "Ivy",
    "Archie", "Lily", "Oscar", "Sienna", "Arlo", "Willow", "Hudson", "Aria", "Max", "Priya", "Wei",
    "Anh", "Mohammed", "Fatima", "Raj", "Mei", "Giovanni", "Sofia", "Aroha", "Siobhan", "Zoë",
    "Mary Jane", "Jean-Luc", "Kai",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "Smith", "Jones", "Williams", "Brown", "Wilson", "Taylor", "Johnson", "White", "Martin",
    "Anderson", "Thompson", "Nguyen", "Thomas", "Walker", "Harris", "Lee", "Ryan", "Robinson",
    "Kelly", "King", "Davis", "Wright", "Evans", "Roberts", "Green", "Hall", "Wood", "Jackson",
    "Clarke", "Patel", "Khan", "Chen", "Wang", "Singh", "O'Brien", "McDonald", "Murphy", "Mitchell",
    "Campbell", "Young", "Scott", "Stewart", "Moore", "Tran", "Le", "Baker", "Hughes", "Edwards",
    "van der Berg", "Di Stefano", "Papadopoulos", "Ngata", "Fitzgerald", "Kowalski", "Müller",
)  # fmt: skip
TRADES: tuple[str, ...] = (
    "Plumbing", "Electrical", "Landscaping", "Bakery", "Cafe", "Consulting", "Building",
    "Physiotherapy", "Dental", "Design", "Logistics", "Cleaning", "Motors", "Vineyards", "Joinery",
)  # fmt: skip
PLACES: tuple[tuple[str, str, str], ...] = (
    ("Sydney", "NSW", "2000"), ("Parramatta", "NSW", "2150"), ("Newcastle", "NSW", "2300"),
    ("Wollongong", "NSW", "2500"), ("Melbourne", "VIC", "3000"), ("Geelong", "VIC", "3220"),
    ("Ballarat", "VIC", "3350"), ("Brisbane", "QLD", "4000"), ("Gold Coast", "QLD", "4217"),
    ("Townsville", "QLD", "4810"), ("Perth", "WA", "6000"), ("Fremantle", "WA", "6160"),
    ("Adelaide", "SA", "5000"), ("Hobart", "TAS", "7000"), ("Launceston", "TAS", "7250"),
    ("Canberra", "ACT", "2600"), ("Darwin", "NT", "0800"), ("Alice Springs", "NT", "0870"),
)  # fmt: skip
STREETS: tuple[str, ...] = (
    "George St", "Pitt Street", "Collins St", "Queen Street", "King St", "Hay Street",
    "Beach Rd", "Station Street", "Church St", "High Street", "Victoria Pde", "Main Road",
)  # fmt: skip
GROUP_NAMES: tuple[str, ...] = (
    "Tax Only",
    "Bookkeeping",
    "Monthly BAS",
    "Quarterly BAS",
    "SMSF Audit",
    "VIP",
    "Rural & Farming",
)
TITLES: tuple[str, ...] = ("Mr", "Mrs", "Ms", "Miss", "Dr", "Mx")
MONTHS: tuple[str, ...] = ("June", "March", "December", "September")
POSITIONS: tuple[str, ...] = ("Director", "Bookkeeper", "Trustee", "Office Manager", "Spouse", "CFO")

# ABN checksum weights (ATO): subtract 1 from the first digit, weight, sum divisible by 89.
_ABN_WEIGHTS = (10, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19)


def abn_is_valid(text: str) -> bool:
    digits = [int(c) for c in text if c.isdigit()]
    if len(digits) != 11 or len(re.sub(r"[\d ]", "", text)) != 0:
        return False
    digits[0] -= 1
    return sum(d * w for d, w in zip(digits, _ABN_WEIGHTS, strict=True)) % 89 == 0


def _format_abn(digits: list[int], rng: random.Random) -> str:
    text = "".join(map(str, digits))
    # Most practices type ABNs with the ATO spacing; some paste them as one run of digits.
    if rng.random() < 0.8:
        return f"{text[:2]} {text[2:5]} {text[5:8]} {text[8:]}"
    return text


def _valid_abn(rng: random.Random) -> str:
    rest = [rng.randrange(10) for _ in range(9)]
    partial = sum(d * w for d, w in zip(rest, _ABN_WEIGHTS[2:], strict=True))
    # (first-1)*10 + second covers 0..89, so exactly one prefix makes the sum divisible by 89.
    prefix = (-partial) % 89
    return _format_abn([prefix // 10 + 1, prefix % 10, *rest], rng)


def _invalid_abn(rng: random.Random) -> str:
    digits = [int(c) for c in _valid_abn(rng) if c.isdigit()]
    digits[10] = (digits[10] + rng.randint(1, 9)) % 10
    return _format_abn(digits, rng)


class _Gen:
    def __init__(self, seed: int, tenant_name: str) -> None:
        self.rng = random.Random(seed)
        slug = re.sub(r"[^a-z0-9]+", "", tenant_name.lower()) or "practice"
        self.domain = f"{slug}.com.au"

    def uuid(self) -> str:
        return str(uuidlib.UUID(int=self.rng.getrandbits(128), version=4))

    def person(self) -> tuple[str, str]:
        return self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)

    def phone(self) -> str:
        area = self.rng.choice(("02", "03", "07", "08"))
        return f"({area}) {self.rng.randint(8000, 9999)} {self.rng.randint(0, 9999):04d}"

    def mobile(self) -> str:
        return f"04{self.rng.randint(10, 99)} {self.rng.randint(0, 999):03d} {self.rng.randint(0, 999):03d}"

    def email(self, first: str, last: str, domain: str) -> str:
        local = re.sub(r"[^a-z.]", "", f"{first}.{last}".lower().replace(" ", "."))
        return f"{local}@{domain}"

    def street(self) -> str:
        return f"{self.rng.randint(1, 400)} {self.rng.choice(STREETS)}"

    def address(self) -> str:
        roll = self.rng.random()
        street = self.street()
        if roll < 0.45:
            return street
        extras = [
            f"Level {self.rng.randint(1, 30)}",
            f"Suite {self.rng.randint(1, 20)}",
            f"Unit {self.rng.randint(1, 90)}",
            "c/o Smith & Co Accountants",
            "Rear entrance, via laneway",
            "Building B",
        ]
        count = self.rng.randint(1, 4)  # 2-5 lines with the street
        lines = [*self.rng.sample(extras, count), street]
        if roll < 0.85:
            return "\n".join(lines)
        # Typed by hand in XPM: stray spaces and blank lines that the sync must tidy up.
        padded = [f"  {line} " if self.rng.random() < 0.5 else line for line in lines]
        padded.insert(self.rng.randint(1, len(padded)), "   ")
        padded.insert(1, "")
        return "\n".join(padded)


def _structure_name(gen: _Gen, structure: str, first: str, last: str) -> str:
    rng = gen.rng
    if structure in ("Individual", "Sole Trader"):
        return f"{first} {last}"
    if structure == "Partnership":
        other = rng.choice(LAST_NAMES)
        return f"{last} & {other} Partners"
    if structure == "Company":
        pattern = rng.choice(("{l} & Sons Pty Ltd", "{l} {t} Pty Ltd", "{t} Holdings Pty Limited"))
        return pattern.format(l=last, t=rng.choice(TRADES))
    if structure in ("Trust", "Family Trust"):
        return f"{last} {structure}" if rng.random() < 0.6 else f"The {last} Investment Trust"
    if structure == "Superannuation Fund":
        return f"{last} Superannuation Fund"
    return f"{last} {rng.choice(('Family', 'Retirement'))} Super Fund"


def _client(
    gen: _Gen,
    index: int,
    groups: list[SimGroup],
    partners: list[str],
    managers: list[str],
) -> SimClient:
    rng = gen.rng
    structure = rng.choice(STANDARD_STRUCTURES)
    first, last = gen.person()
    name = _structure_name(gen, structure, first, last)
    individual = structure in ("Individual", "Sole Trader")
    city, region, post_code = rng.choice(PLACES)
    elements: dict[str, str] = {"Name": name}
    if individual:
        elements["Title"] = rng.choice(TITLES)
        elements["Gender"] = rng.choice(("Male", "Female", ""))
        elements["FirstName"] = first
        elements["LastName"] = last
        if rng.random() < 0.2:
            elements["OtherName"] = rng.choice(FIRST_NAMES)
    roll = rng.random()
    if roll < 0.8:
        elements["Email"] = gen.email(first, last, rng.choice(("gmail.com", "outlook.com", "bigpond.com")))
    elif roll < 0.9:
        elements["Email"] = ""
    if individual:
        birth = datetime(1940, 1, 1) + timedelta(days=rng.randint(0, 60 * 365))
        elements["DateOfBirth"] = birth.strftime("%Y-%m-%dT00:00:00")
    elements["Address"] = gen.address()
    elements["City"] = city
    elements["Region"] = region
    elements["PostCode"] = post_code
    elements["Country"] = "Australia"
    postal = rng.random()
    if postal < 0.5:
        elements["PostalAddress"] = elements["Address"]
        elements["PostalCity"], elements["PostalRegion"], elements["PostalPostCode"] = city, region, post_code
    elif postal < 0.8:
        p_city, p_region, p_code = rng.choice(PLACES)
        elements["PostalAddress"] = f"PO Box {rng.randint(1, 9999)}"
        elements["PostalCity"], elements["PostalRegion"], elements["PostalPostCode"] = (
            p_city,
            p_region,
            p_code,
        )
    else:
        for key in ("PostalAddress", "PostalCity", "PostalRegion", "PostalPostCode"):
            elements[key] = ""
    elements["PostalCountry"] = "Australia" if postal < 0.8 else ""
    elements["Phone"] = gen.phone() if rng.random() < 0.85 else ""
    elements["Fax"] = gen.phone() if rng.random() < 0.05 else ""
    if not individual and rng.random() < 0.4:
        elements["Website"] = f"www.{re.sub(r'[^a-z]', '', last.lower())}.com.au"
    elements["ReferralSource"] = rng.choice(("", "Existing client", "Website", "Bank referral"))
    elements["ExportCode"] = ""
    elements["IsProspect"] = "No"
    elements["IsArchived"] = "No"
    elements["IsDeleted"] = "No"
    elements["Type"] = rng.choice(("Standard", "Monthly", "Fixed Fee"))
    if rng.random() < 0.15:
        elements["Notes"] = rng.choice(
            ("Prefers email & phone calls after 3pm.", "Year-end <June> pack sent by post.", "See file note.")
        )
    elements["BusinessStructure"] = structure
    elements["BalanceMonth"] = rng.choice(MONTHS)
    letters = re.sub(r"[^A-Za-z]", "", last if individual else name).upper()[:4] or "CLNT"
    elements["ClientCode"] = f"{letters}{index + 1:04d}"
    if not individual or rng.random() < 0.3:
        elements["BusinessNumber"] = _valid_abn(rng)
    if structure == "Company":
        acn = f"{rng.randint(0, 999_999_999):09d}"
        elements["CompanyNumber"] = f"{acn[:3]} {acn[3:6]} {acn[6:]}"
    if rng.random() < 0.5:
        elements["TaxNumber"] = f"{rng.randint(100_000_000, 999_999_999)}"
    elements["GSTRegistered"] = "Yes" if not individual and rng.random() < 0.7 else "No"
    if elements["GSTRegistered"] == "Yes":
        elements["GSTPeriod"] = rng.choice(("Monthly", "Quarterly"))
        elements["PrepareGST"] = "Yes"

    contacts: list[SimContact] = []
    count = rng.randint(0, 3)
    primary = rng.randrange(count) if count else -1
    for number in range(count):
        c_first, c_last = (first, last) if number == 0 and individual else gen.person()
        contacts.append(
            SimContact(
                uuid=gen.uuid(),
                name=f"{c_first} {c_last}",
                is_primary=number == primary,
                salutation=c_first if rng.random() < 0.8 else "",
                addressee=f"{c_first} {c_last}",
                mobile=gen.mobile() if rng.random() < 0.6 else "",
                email=gen.email(c_first, c_last, "example.com.au") if rng.random() < 0.7 else "",
                phone=gen.phone() if rng.random() < 0.3 else "",
                position=rng.choice(POSITIONS) if not individual else "",
            )
        )
    client_groups = rng.sample(groups, rng.randint(0, min(2, len(groups))))
    return SimClient(
        uuid=gen.uuid(),
        elements=elements,
        contacts=contacts,
        groups=client_groups,
        account_manager_uuid=rng.choice(partners),
        job_manager_uuid=rng.choice(managers) if rng.random() < 0.8 else None,
        modified_at=GENERATED_AT - timedelta(seconds=rng.randint(3600, 400 * 86400)),
    )


def _plant_client_problem(
    gen: _Gen, kind: str, index: int, clients: list[SimClient], troubled: set[int], hidden: str | None
) -> None:
    rng = gen.rng
    client = clients[index]
    elements = client.elements
    if kind == "missing_partner":
        client.account_manager_uuid = None
    elif kind == "partner_not_in_active":
        client.account_manager_uuid = hidden
    elif kind == "duplicate_code":
        owner = rng.randrange(index)
        while owner in troubled:  # terminates: index 0 is never troubled
            owner = rng.randrange(index)
        elements["ClientCode"] = clients[owner].elements["ClientCode"]
    elif kind == "archived":
        elements["IsArchived"] = "Yes"
    elif kind == "missing_business_structure":
        if rng.random() < 0.5:
            elements.pop("BusinessStructure", None)
        else:
            elements["BusinessStructure"] = ""
    elif kind == "custom_business_structure":
        elements["BusinessStructure"] = rng.choice(CUSTOM_STRUCTURES)
    elif kind == "individual_missing_name":
        elements["BusinessStructure"] = "Individual"
        words = (elements.get("Name") or "Someone").split()
        elements["FirstName"] = words[0]
        if rng.random() < 0.5:
            elements.pop("LastName", None)
        else:
            elements["LastName"] = ""
    elif kind == "invalid_abn":
        elements["BusinessNumber"] = _invalid_abn(rng)


def generate_practice(
    seed: int = 1,
    *,
    staff: int = 20,
    clients: int = 200,
    problem_share: float = 0.1,
    tenant_id: str | None = None,
    tenant_name: str = "Demo Practice",
) -> Practice:
    if staff < 1:
        raise ValueError("a practice needs at least one staff member (its partner)")
    gen = _Gen(seed, tenant_name)
    rng = gen.rng
    practice_tenant = gen.uuid()
    practice = Practice(tenant_id=tenant_id or practice_tenant, tenant_name=tenant_name)

    partner_count = max(1, round(staff / 5))
    members: list[SimStaff] = []
    used_emails: set[str] = set()
    for number in range(staff):
        first, last = gen.person()
        email = gen.email(first, last, gen.domain)
        while email in used_emails:
            email = email.replace("@", f"{rng.randint(1, 9)}@")
        used_emails.add(email)
        members.append(
            SimStaff(
                uuid=gen.uuid(),
                name=f"{first} {last}",
                email=email,
                phone=gen.phone(),
                mobile=gen.mobile() if rng.random() < 0.7 else "",
                address=gen.address() if rng.random() < 0.3 else "",
                payroll_code=f"P{number + 1:03d}",
                is_partner=number < partner_count,
                modified_at=GENERATED_AT - timedelta(days=rng.randint(1, 700)),
            )
        )
    practice.staff = members
    partners = [m.uuid for m in members if m.is_partner]

    # Staff problems only hit non-partners, and those staff manage no jobs, so each planted problem
    # surfaces once and nowhere else.
    staff_problem_count = min(round(staff * problem_share), staff - partner_count)
    troubled = rng.sample([m for m in members if not m.is_partner], staff_problem_count)
    for number, member in enumerate(troubled):
        kind = STAFF_PROBLEMS[number % len(STAFF_PROBLEMS)]
        if kind == "one_word_staff_name":
            member.name = (member.name or "Someone").split()[0]
        else:
            member.email = "" if rng.random() < 0.5 else None
        practice.problems.setdefault(kind, []).append(member.uuid)

    kinds = list(CLIENT_PROBLEMS)
    # PARTNER_NOT_IN_ACTIVE needs one partner set aside while the others keep clean clients.
    hidden: str | None = None
    problem_count = round(clients * problem_share) if clients > 1 else 0
    if problem_count and len(partners) >= 2:
        hidden = partners[-1]
        practice.partners_without_active_user = [hidden]
        partners = partners[:-1]
    else:
        kinds.remove("partner_not_in_active")
    troubled_uuids = {m.uuid for m in troubled}
    managers = [m.uuid for m in members if m.uuid not in troubled_uuids and m.uuid != hidden]

    groups = [SimGroup(uuid=gen.uuid(), name=name) for name in GROUP_NAMES]
    generated = [_client(gen, index, groups, partners, managers) for index in range(clients)]
    # Index 0 stays clean so every duplicate code has an earlier, syncable owner.
    problem_indices = sorted(rng.sample(range(1, clients), min(problem_count, clients - 1)))
    chosen = set(problem_indices)
    for number, index in enumerate(problem_indices):
        kind = kinds[number % len(kinds)]
        _plant_client_problem(gen, kind, index, generated, chosen, hidden)
        practice.problems.setdefault(kind, []).append(generated[index].uuid)
    practice.clients = generated
    return practice
